"""Plots of federated training."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from tutorial_helpers.expected_results import training_metrics

_ACCURACY_KEYS = ("sparse_categorical_accuracy", "accuracy")


def _save(fig: Figure, save_to: str | os.PathLike | None, dpi: int) -> None:
    """Saves `fig` to `save_to`, if given, creating its directory."""
    if save_to is not None:
        os.makedirs(os.path.dirname(os.path.abspath(save_to)), exist_ok=True)
        fig.savefig(save_to, dpi=dpi)


def _series(history: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[float]]:
    accuracy, loss = [], []
    for round_num, round_metrics in enumerate(history, start=1):
        if not isinstance(round_metrics, Mapping):
            raise TypeError(
                f"history[{round_num - 1}] is a {type(round_metrics).__name__}; expected the "
                "metrics mapping of one round, e.g. `process.next(state, data).metrics`."
            )
        metrics = training_metrics(round_metrics)
        accuracy_key = next((k for k in _ACCURACY_KEYS if k in metrics), None)
        if accuracy_key is None or "loss" not in metrics:
            raise ValueError(
                f"Round {round_num} has no accuracy and loss metrics: expected keys "
                f"{_ACCURACY_KEYS[0]!r} and 'loss' in metrics['client_work']['train'], "
                f"found {sorted(metrics)}."
            )
        accuracy.append(float(metrics[accuracy_key]))
        loss.append(float(metrics["loss"]))
    return accuracy, loss


def plot_training_curves(
    history: Sequence[Mapping[str, Any]],
    *,
    title: str = "Federated training",
    save_to: str | os.PathLike | None = None,
) -> Figure:
    """Draws training accuracy and loss per round.

    Args:
      history: the metrics of each round in order, as returned by
        `process.next(state, data).metrics` (TFF's nested structure with
        `client_work/train`), or flat mappings with an accuracy and `loss`.
      title: the figure's title.
      save_to: optional path; the figure is also saved there (PNG, SVG, PDF,
        as the suffix says), creating the directory if needed.

    Returns:
      The matplotlib Figure, with an accuracy and a loss axes.
    """
    if len(history) == 0:
        raise ValueError("history is empty: run at least one round and append its metrics.")
    accuracy, loss = _series(history)
    rounds = range(1, len(history) + 1)
    fig, (ax_accuracy, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    ax_accuracy.plot(rounds, accuracy, marker="o", color="tab:blue")
    ax_accuracy.set(xlabel="round", ylabel="training accuracy", ylim=(0, 1), title="Accuracy")
    ax_loss.plot(rounds, loss, marker="o", color="tab:red")
    ax_loss.set(xlabel="round", ylabel="training loss", title="Loss")
    for ax in (ax_accuracy, ax_loss):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    _save(fig, save_to, dpi=120)
    return fig


def plot_label_distributions(
    counts: Mapping[str, Any],
    rows: Mapping[str, Sequence[str]],
    *,
    distance: Mapping[str, float] | None = None,
    min_digits: int | None = None,
    title: str = "Labels per writer (bars) against all writers (line), and digits per writer",
    save_to: str | os.PathLike | None = None,
) -> Figure:
    """Bar charts of some writers' label shares against everyone's, next to a histogram of data per writer.

    Args:
      counts: for every writer, its number of examples of each label, e.g.
        `{client_id: np.bincount(labels, minlength=10)}`. The line in each panel
        (all writers' shares) and the histogram use all of them.
      rows: the writers to draw, one row of panels per entry: `{row label: client ids}`.
        Each row gets its own vertical scale.
      distance: optional `{client_id: distance}`, shown in each panel's title.
      min_digits: optional threshold, marked in the histogram as a dashed line.
      title: the figure's title.
      save_to: optional path; the figure is also saved there, creating the
        directory if needed.

    Returns:
      The matplotlib Figure: one axes per drawn writer, then the histogram.
    """
    import numpy as np

    if not counts:
        raise ValueError("counts is empty: count the labels of at least one writer.")
    if not rows or not all(len(ids) for ids in rows.values()):
        raise ValueError("rows is empty or has an empty row: give each row at least one client id.")
    unknown = sorted({cid for ids in rows.values() for cid in ids} - set(counts))
    if unknown:
        raise ValueError(f"rows name writers that counts does not have: {unknown}.")
    table = {cid: np.asarray(c, dtype=float) for cid, c in counts.items()}
    overall = sum(table.values()) / sum(c.sum() for c in table.values())
    labels = np.arange(len(overall))
    ncols = max(len(ids) for ids in rows.values())
    fig = plt.figure(figsize=(13, 2.6 * len(rows) + 0.6), layout="constrained")
    grid = fig.add_gridspec(len(rows), ncols + 1, width_ratios=[1] * ncols + [1.2])
    for r, (row_label, ids) in enumerate(rows.items()):
        # One scale per row, so that small differences are visible in a row of balanced writers.
        top = max(0.3, 1.15 * max((table[cid] / table[cid].sum()).max() for cid in ids))
        for c, cid in enumerate(ids):
            ax = fig.add_subplot(grid[r, c])
            ax.bar(labels, table[cid] / table[cid].sum(), color="tab:blue", label="this writer")
            ax.step(labels, overall, where="mid", color="black", label="all writers")
            shown = f", distance {distance[cid]:.2f}" if distance is not None else ""
            ax.set(xticks=labels, ylim=(0, min(top, 1.05)))
            size = int(table[cid].sum())
            ax.set_title(f"{cid}: {size} digit{'s' * (size != 1)}{shown}", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{row_label}\nshare of digits")
            if r == 0 and c == 0:
                ax.legend(fontsize=8)
    ax_sizes = fig.add_subplot(grid[:, ncols])
    ax_sizes.hist([c.sum() for c in table.values()], bins=20, color="tab:gray")
    if min_digits is not None:
        ax_sizes.axvline(min_digits, color="black", linestyle="--", label=f"{min_digits} digits")
        ax_sizes.legend(fontsize=8)
    ax_sizes.set(title="Digits per writer", xlabel="training digits", ylabel="writers")
    fig.suptitle(title)
    _save(fig, save_to, dpi=100)
    return fig


def plot_round_costs(costs, *, title: str = "What a round costs", save_to=None) -> Figure:
    """Bar charts of seconds per round and bytes through the controller per round.

    Args:
      costs: `tutorial_helpers.round_costs.RoundCost` objects, one per mode.
      save_to: optional path to save the figure to.
    """
    import statistics

    if not costs:
        raise ValueError("costs is empty: measure at least one mode.")
    names = [cost.mode for cost in costs]
    seconds = [statistics.median(cost.seconds) for cost in costs]
    kib = [statistics.median(cost.bytes_through_controller) / 1024 for cost in costs]
    fig, (ax_time, ax_bytes) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    ax_time.barh(names, seconds, color="tab:blue")
    ax_time.set(xlabel="seconds per round (median)", title="Time")
    ax_bytes.barh(names, kib, color="tab:orange")
    ax_bytes.set(xlabel="KiB of client data through the controller, per round",
                 title="Traffic", xscale="log")
    for ax, values, fmt in ((ax_time, seconds, "{:.2f} s"), (ax_bytes, kib, "{:,.1f} KiB")):
        ax.invert_yaxis()
        for y, value in enumerate(values):
            ax.text(value, y, " " + fmt.format(value), va="center", fontsize=9)
        ax.margins(x=0.25)
    ax_bytes.set_xlim(right=max(kib) * 40)  # On a log scale: room for the largest label.
    ax_bytes.set_yticks(range(len(names)), [""] * len(names))
    fig.suptitle(title)
    _save(fig, save_to, dpi=120)
    return fig
