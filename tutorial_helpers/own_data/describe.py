"""What a source holds: its clients, their sizes, their labels, and how far each is from identically distributed.

`describe(source)` reads only the label counts (one GROUP BY for a database,
the label column for a table, the file names for images), never the
features. `label_distance` is notebook 01's non-IID measure;
`plot_label_distributions` draws each client's labels as stacked bars.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import numpy as np

from tutorial_helpers.own_data.sources import ClientSource, LabelMap

__all__ = ["Description", "describe", "label_distance", "plot_label_distributions"]


def label_distance(counts: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Notebook 01's non-IID measure: for each client, the total variation distance of its label shares
    from all clients' shares together (half the sum of the absolute differences); 0 when a client's labels
    are distributed like everyone's, near 1 when they are all of labels that are rare overall.

    `counts` is {client id: examples per label}, every client with at least one example. The same
    definition as the notebook's cell (`overall = sum(counts.values()) / sizes.sum()`); a test runs that
    cell's code beside this function.
    """
    table = {cid: np.asarray(count, dtype=float) for cid, count in counts.items()}
    overall = sum(table.values()) / sum(count.sum() for count in table.values())
    return {cid: float(0.5 * np.abs(count / count.sum() - overall).sum()) for cid, count in table.items()}


@dataclasses.dataclass(frozen=True)
class Description:
    """A source's clients at a glance: sizes, labels per client, each client's distance (notebook 01's)."""

    labels: LabelMap
    label_counts: dict[str, np.ndarray]
    distance: dict[str, float]
    sites: dict[str, tuple[str, ...]]

    @property
    def sizes(self) -> np.ndarray:
        """Examples per client, in client order."""
        return np.array([count.sum() for count in self.label_counts.values()], dtype=np.int64)

    def summary(self) -> dict[str, float]:
        """The numbers `__str__` prints: clients, examples, min/median/max per client, the distance's spread."""
        sizes, distances = self.sizes, np.array(list(self.distance.values()))
        return {"clients": len(sizes), "examples": int(sizes.sum()), "min": int(sizes.min()),
                "median": float(np.median(sizes)), "max": int(sizes.max()), "labels": len(self.labels),
                "distance_median": float(np.median(distances)), "distance_p90": float(np.percentile(distances, 90)),
                "distance_max": float(distances.max())}

    def __str__(self) -> str:
        s = self.summary()
        lines = [
            f"{s['clients']} clients, {s['examples']} examples",
            f"examples per client: min {s['min']}, median {s['median']:g}, max {s['max']}",
            f"{s['labels']} labels: {', '.join(str(value) for value in self.labels.values[:20])}"
            + (", ..." if len(self.labels) > 20 else ""),
            f"distance of a client's labels from all clients' (notebook 01): median {s['distance_median']:.2f}, "
            f"90th percentile {s['distance_p90']:.2f}, max {s['distance_max']:.2f}",
        ]
        lines += [f"site {site}: {len(ids)} clients" for site, ids in self.sites.items()]
        return "\n".join(lines)


def describe(source: ClientSource) -> Description:
    """Counts each client's labels (without reading any feature) and measures each client's distance."""
    counts = source.label_counts()
    return Description(labels=source.labels, label_counts=counts, distance=label_distance(counts),
                       sites=source.sites())


def plot_label_distributions(description: Description, *, max_clients: int = 40,
                             save_to: str | os.PathLike | None = None):
    """Stacked bars: for each client (the first `max_clients`), how many examples of each label it has.

    One colour per label; a bar's height is the client's size, its colours
    its label mix, so both kinds of non-IID data show. Returns the matplotlib
    Figure; with `save_to`, also saves it there as an image.
    """
    import matplotlib.pyplot as plt

    ids = list(description.label_counts)[:max_clients]
    counts = np.array([description.label_counts[cid] for cid in ids], dtype=float)
    fig, ax = plt.subplots(figsize=(min(2 + 0.35 * len(ids), 16), 4.5), layout="constrained")
    bottom = np.zeros(len(ids))
    colours = plt.get_cmap("tab20" if len(description.labels) > 10 else "tab10")
    for index, value in enumerate(description.labels.values):
        ax.bar(range(len(ids)), counts[:, index], bottom=bottom, color=colours(index % colours.N), label=str(value))
        bottom += counts[:, index]
    ax.set_xticks(range(len(ids)), ids, rotation=90, fontsize=8)
    shown = f"the first {len(ids)} of {len(description.label_counts)} clients" \
        if len(ids) < len(description.label_counts) else f"{len(ids)} clients"
    ax.set(xlabel="client", ylabel="examples",
           title=f"Labels per client ({shown}); median distance {np.median(list(description.distance.values())):.2f}")
    if len(description.labels) <= 20:
        ax.legend(title="label", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if save_to is not None:
        fig.savefig(save_to, dpi=100)
    return fig
