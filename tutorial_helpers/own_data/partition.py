"""Clients where the data has none: IID, Dirichlet over labels, shards, or a natural id.

Each partitioner takes the examples' labels (one value per example, in the
source's row order) and returns `{client_id: row positions}`: every position
in exactly one client, each client's positions sorted. Give a source one
with its settings bound, e.g.
`functools.partial(partition.dirichlet, num_clients=20, alpha=0.5, seed=0)`.
The same arguments and seed give the same clients, on any machine (numpy's
`default_rng`).

They follow what Flower's `flwr-datasets` documents for its partitioners of
the same names (`IidPartitioner`, `DirichletPartitioner`, `ShardPartitioner`,
`NaturalIdPartitioner`): the same alpha gives the same kind of skew, a
smaller alpha more. They are the kit's own code; the tests check that
behaviour, measured with notebook 01's distance.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tutorial_helpers.own_data.errors import OwnDataError

__all__ = ["Partitioner", "by_column", "client_names", "dirichlet", "iid", "shards"]

Partitioner = Callable[[np.ndarray], dict[str, np.ndarray]]


def client_names(num_clients: int) -> list[str]:
    """`client_0`, `client_1`, ... zero-padded so that they sort in order; safe file names at a site."""
    width = len(str(max(num_clients - 1, 0)))
    return [f"client_{index:0{width}d}" for index in range(num_clients)]


def _check_count(labels: np.ndarray, num_clients: int, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise OwnDataError(f"{name}: labels must be one value per example (1-D), got shape {labels.shape}.")
    if not 1 <= num_clients <= len(labels):
        raise OwnDataError(f"{name}: num_clients={num_clients} for {len(labels)} examples: give between 1 and "
                           f"{len(labels)} clients, so that each can have at least one example.")
    return labels


def _as_clients(parts: list[np.ndarray]) -> dict[str, np.ndarray]:
    return {name: np.sort(part).astype(np.int64) for name, part in zip(client_names(len(parts)), parts, strict=True)}


def iid(labels: np.ndarray, num_clients: int, *, seed: int) -> dict[str, np.ndarray]:
    """Each client a random sample of the examples, all of (nearly) the same size: shuffled, then cut in turn."""
    labels = _check_count(labels, num_clients, "iid")
    order = np.random.default_rng(seed).permutation(len(labels))
    return _as_clients(np.array_split(order, num_clients))


def _dirichlet_draw(labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator) -> list:
    """One draw: each label's examples shared out among the clients by shares ~ Dirichlet(alpha, ..., alpha)."""
    pieces: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for value in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == value))
        shares = rng.dirichlet(np.full(num_clients, alpha))
        cuts = np.round(np.cumsum(shares)[:-1] * len(rows)).astype(int)
        for client, piece in enumerate(np.split(rows, cuts)):
            pieces[client].append(piece)
    return [np.concatenate(client_pieces) for client_pieces in pieces]


def dirichlet(labels: np.ndarray, num_clients: int, *, alpha: float, seed: int, min_examples: int = 1,
              max_draws: int = 100) -> dict[str, np.ndarray]:
    """Label skew by a Dirichlet draw per label (Yurochkin et al., 2019; flwr-datasets' DirichletPartitioner).

    For each label, the clients' shares of its examples are drawn from a
    symmetric Dirichlet distribution with concentration `alpha`: a large
    alpha (100) gives every client nearly the overall label mix; a small one
    (0.1) gives most of a label to a few clients. If a draw leaves a client
    with fewer than `min_examples`, it draws again, up to `max_draws` times,
    then raises OwnDataError saying what to change.
    """
    labels = _check_count(labels, num_clients, "dirichlet")
    if not alpha > 0:
        raise OwnDataError(f"dirichlet: alpha={alpha} must be positive (0.1 is very skewed, 100 nearly IID).")
    rng = np.random.default_rng(seed)
    smallest = 0
    for _ in range(max_draws):
        parts = _dirichlet_draw(labels, num_clients, alpha, rng)
        smallest = min(len(part) for part in parts)
        if smallest >= min_examples:
            return _as_clients(parts)
    raise OwnDataError(
        f"dirichlet(alpha={alpha}, num_clients={num_clients}): in {max_draws} draws, some client always had fewer "
        f"than min_examples={min_examples} examples (the last draw's smallest: {smallest}). Raise alpha, or give "
        "fewer clients, or a smaller min_examples.")


def shards(labels: np.ndarray, num_clients: int, *, shards_per_client: int = 2, seed: int) -> dict[str, np.ndarray]:
    """Pathological skew (McMahan et al., 2017; flwr-datasets' ShardPartitioner): a few labels per client.

    The examples are sorted by label (in random order within a label), cut
    into `num_clients * shards_per_client` shards of (nearly) equal size, and
    each client gets `shards_per_client` shards chosen at random; so a client
    holds about `shards_per_client` labels.
    """
    labels = _check_count(labels, num_clients, "shards")
    count = num_clients * shards_per_client
    if not 1 <= count <= len(labels):
        raise OwnDataError(f"shards: {num_clients} clients x {shards_per_client} shards = {count} shards for "
                           f"{len(labels)} examples: give fewer clients or shards_per_client.")
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(labels))
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    pieces = np.array_split(by_label, count)
    dealt = rng.permutation(count).reshape(num_clients, shards_per_client)
    return _as_clients([np.concatenate([pieces[i] for i in hand]) for hand in dealt])


def by_column(values: np.ndarray) -> dict[str, np.ndarray]:
    """Natural clients (flwr-datasets' NaturalIdPartitioner): one client per distinct value, named by it."""
    names = np.asarray([str(value) for value in np.asarray(values, dtype=object).tolist()], dtype=str)
    ids, inverse = np.unique(names, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    groups = np.split(order, np.cumsum(np.bincount(inverse))[:-1])
    return {str(name): rows for name, rows in zip(ids, groups, strict=True)}
