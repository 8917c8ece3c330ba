"""Notebook 05's exercise: a backend that caches what it fetched."""

from __future__ import annotations

import asyncio

import tensorflow as tf
from tensorflow_federated.proto.v0 import computation_pb2 as pb

from tutorial_helpers import data as kit_data
from tutorial_helpers.exercises.common import CheckResult, client_indices, not_right, not_yet, run, span, verdict


class _CountingBackend:
    """Serves `uri://<index>` from `client_data`, counting how often each URI was asked for.

    It stands in for `HttpDataBackend` in the caching check: one call here is
    one HTTP request there.
    """

    def __init__(self, client_data):
        from tutorial_helpers.backends import ClientDataBackend

        self._backend = ClientDataBackend(client_data)
        self.calls: dict[str, int] = {}

    async def materialize(self, data, type_spec):
        self.calls[data.uri] = self.calls.get(data.uri, 0) + 1
        await asyncio.sleep(0.001)  # A real fetch waits; let the others of the round start.
        return await self._backend.materialize(data, type_spec)


def _same_examples(dataset, expected) -> bool:
    """The same examples, in any order: a dataset that shuffles reshuffles each time it
    is read here (the worker reads a fresh copy each round)."""

    def examples(ds):
        return sorted((int(e["y"].sum()), e["x"].tobytes()) for e in ds.as_numpy_iterator())

    return examples(dataset) == examples(expected)


def check_caching_backend(caching_backend_class, client_data, dataset_type, num_clients: int = 5) -> CheckResult:
    """Exercise 05: a backend that fetches each URI from its inner backend only once.

    Builds `caching_backend_class(inner)` around a counting backend, runs two
    "rounds" over the first `num_clients` clients (all of a round's URIs at
    once, as the runtime asks for them; the first round names its first
    client twice), then one more client, and checks the datasets and how many
    times each URI reached the inner backend.
    """
    indices = client_indices(client_data, range(num_clients), "num_clients")
    inner = _CountingBackend(client_data)
    unsolved = ("materialize still raises NotImplementedError.", "05_caching_backend.py")
    try:
        backend = caching_backend_class(inner)
    except NotImplementedError:
        return not_yet(*unsolved)
    except Exception as e:  # the learner's code may raise anything
        return not_right(f"CachingBackend(inner) raised {type(e).__name__}: {e}")

    async def one_round(round_uris):
        return await asyncio.gather(
            *(backend.materialize(pb.Data(uri=uri), dataset_type) for uri in round_uris))

    # Round 1 names its first client twice, as a data descriptor may (notebook
    # 03 builds one): the runtime then asks for that URI twice at once.
    problems, rounds = [], {}
    first_round = [*indices, indices[0]]
    for name, round_indices in (("round 1", first_round), ("round 2", indices),
                                ("a new client", [num_clients])):
        round_uris = [f"uri://{i}" for i in round_indices]
        before = sum(inner.calls.values())
        try:
            datasets = run(one_round(round_uris))
        except NotImplementedError:
            return not_yet(*unsolved)
        except Exception as e:
            return not_right(f"In {name}, materialize raised {type(e).__name__}: {e}")
        rounds[name] = sum(inner.calls.values()) - before
        for index, uri, dataset in zip(round_indices, round_uris, datasets, strict=True):
            expected = kit_data.client_dataset(client_data, index)
            if not isinstance(dataset, tf.data.Dataset) or not _same_examples(dataset, expected):
                problems.append(f"In {name}, {uri} did not give the examples of client {index}. "
                                "Is the cache keyed on data.uri?")
                break
    twice = f"uri://{indices[0]}"
    if inner.calls.get(twice, 0) > 1 and rounds["round 1"] == len(indices) + 1 and not rounds["round 2"]:
        problems.append(f"Round 1 names {twice} twice, and it was fetched twice: both calls looked in "
                        "the cache before the first fetch had finished. Cache the fetch under way "
                        "(asyncio.ensure_future(...), awaited by every call), not only its result.")
    elif rounds["round 1"] != len(indices):
        problems.append(f"Round 1 should fetch each of its {len(indices)} clients once from the inner "
                        f"backend; it fetched {rounds['round 1']} times.")
    if rounds["round 2"]:
        problems.append(f"Round 2 asked the inner backend {rounds['round 2']} more times for the "
                        "same clients. Keep the cache on self (made in __init__), so that it "
                        "outlives one call of materialize.")
    if rounds["a new client"] != 1:
        problems.append(f"A client not seen before should be fetched once; it was fetched "
                        f"{rounds['a new client']} times.")
    return verdict(problems, f"Clients {span(indices)} were fetched once in round 1 and served from the "
                       "cache in round 2: over HTTP, round 2 would send no request.")
