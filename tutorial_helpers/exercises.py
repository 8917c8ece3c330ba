"""Checks for the notebooks' exercises.

Each check prints a verdict ("Correct!", "Not right yet", or "Not solved
yet") and returns nothing, so that a check cell shows only the verdict. An
answer still raising NotImplementedError (the exercise as handed out) gets
"not solved yet" and the path of the solution, which is kept in
notebooks/solutions/ so that it is not the first thing a learner sees.
"""

from __future__ import annotations

import asyncio
import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.proto.v0 import computation_pb2 as pb

from tutorial_helpers import data as kit_data

_NOT_YET = "Not solved yet: {hint} (A solution: notebooks/solutions/{solution}.)"


def _verdict(problems: list[str], success: str) -> None:
    if problems:
        print("Not right yet:\n  - " + "\n  - ".join(problems))
    else:
        print(f"Correct! {success}")


def _run(coroutine):
    """Runs a coroutine whether or not an event loop is running (Jupyter runs one)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _client_indices(client_data, indices, name: str) -> list[int]:
    """`indices` as a list, checked to name clients of `client_data` (0-based, sorted ids).

    Raises ValueError naming the argument `name` and the valid range otherwise.
    """
    count = len(client_data.client_ids)
    indices = list(indices)
    bad = [i for i in indices if isinstance(i, bool) or not isinstance(i, (int, np.integer))
           or not 0 <= i < count]
    if not indices or bad:
        raise ValueError(
            f"{name} must name at least one client, each an index from 0 to {count - 1} (this "
            f"data has {count} clients); got {indices if not bad else bad}."
        )
    return indices


def _span(indices: list[int]) -> str:
    """How messages name clients: "5-9" for a run of consecutive indices, else "1, 4, 7"."""
    if len(indices) > 1 and indices == list(range(indices[0], indices[-1] + 1)):
        return f"{indices[0]}-{indices[-1]}"
    return ", ".join(map(str, indices))


def _same_elements(dataset, expected) -> bool:
    got, want = list(dataset.as_numpy_iterator()), list(expected.as_numpy_iterator())
    return len(got) == len(want) and all(
        np.array_equal(a["x"], b["x"]) and np.array_equal(a["y"], b["y"]) for a, b in zip(got, want, strict=True)
    )


def check_even_clients_backend(backend, client_data, dataset_type) -> None:
    """Exercise 02: a backend that serves only even-numbered clients."""
    ids = client_data.client_ids

    async def materialize(uri):
        return await backend.materialize(pb.Data(uri=uri), dataset_type)

    # Derived from the data, not from the sample's size: the first even
    # clients and the last, the first odd ones and the last, one past the end.
    last = len(ids) - 1
    last_even, last_odd = last - last % 2, last - (1 - last % 2)
    problems = []
    for index in sorted({0, 2, 4, last_even} & set(range(len(ids)))):
        uri = f"uri://{index}"
        try:
            dataset = _run(materialize(uri))
        except NotImplementedError:
            print(_NOT_YET.format(hint="materialize still raises NotImplementedError.",
                                  solution="02_even_clients.py"))
            return
        except Exception as e:  # noqa: BLE001 (the learner's code may raise anything)
            problems.append(f"{uri} should be served, but raised {type(e).__name__}: {e}")
            continue
        expected = kit_data.preprocess(client_data.create_tf_dataset_for_client(ids[index]))
        if not isinstance(dataset, tf.data.Dataset):
            problems.append(f"{uri} should give a tf.data.Dataset, got {type(dataset).__name__}.")
        elif dataset.element_spec != expected.element_spec:
            problems.append(f"{uri} gave elements {dataset.element_spec}; preprocessed client data "
                            f"has {expected.element_spec}.")
        elif not _same_elements(dataset, expected):
            problems.append(f"{uri} should be the data of client {index} ({ids[index]}), preprocessed.")
    refused = [f"uri://{i}" for i in sorted({1, 3, last_odd} & set(range(len(ids))))]
    past_the_end = len(ids) + len(ids) % 2  # Even, so only its range can refuse it.
    for uri in (*refused, "uri://x", f"uri://{past_the_end}"):
        try:
            _run(materialize(uri))
            problems.append(f"{uri} should be rejected, but a dataset was returned.")
        except NotImplementedError:
            print(_NOT_YET.format(hint="materialize still raises NotImplementedError.",
                                  solution="02_even_clients.py"))
            return
        except Exception as e:  # noqa: BLE001
            if uri not in str(e):
                problems.append(f"The error for {uri} should name it; it says: {e}")
    _verdict(problems, "Even clients are served, odd and malformed URIs are refused by name.")


def check_label_zero_count(count_label_zero, dataset_type, client_data, num_clients: int = 5) -> None:
    """Exercise 03: a federated computation counting the examples labelled 0.

    Runs it on the first `num_clients` clients of `client_data` (at least 1,
    at most as many as it has) and compares with a count made here.
    """
    if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)):
        raise TypeError(f"num_clients must be an int, got {num_clients!r}.")
    indices = _client_indices(client_data, range(num_clients), "num_clients")
    uris = [f"uri://{i}" for i in indices]
    handle = tff.framework.CreateDataDescriptor(arg_uris=uris, arg_type=dataset_type)
    try:
        answer = count_label_zero(handle)
    except NotImplementedError:
        print(_NOT_YET.format(hint="count_label_zero still raises NotImplementedError.",
                              solution="03_label_zero.py"))
        return
    expected = 0
    for client_id in (client_data.client_ids[i] for i in indices):
        for example in kit_data.preprocess(client_data.create_tf_dataset_for_client(client_id)):
            expected += int(example["y"][0, 0] == 0)
    problems = []
    result_type = getattr(getattr(count_label_zero, "type_signature", None), "result", None)
    if not isinstance(count_label_zero, tff.Computation):
        problems.append("count_label_zero should be a TFF computation (@tff.federated_computation).")
    elif not (isinstance(result_type, tff.FederatedType) and result_type.placement is tff.SERVER):
        problems.append(f"The result should be one number placed at the server (int32@SERVER); "
                        f"its type is {result_type}. Did you sum over the clients?")
    else:
        try:
            if int(answer) != expected:
                problems.append(f"Clients {_span(indices)} hold {expected} batches labelled 0 "
                                f"(epochs included); the computation returned {int(answer)}.")
        except (TypeError, ValueError):
            problems.append(f"The computation returned {answer!r}, not a number.")
    _verdict(problems, f"{expected} examples labelled 0 on clients {_span(indices)}.")


def check_other_clients_history(history, client_data, clients=range(5, 10), rounds: int = 3) -> None:
    """Exercise 04: training by URI on the clients with indices `clients`, `rounds` rounds.

    Each round must have trained on exactly those clients' examples, counted
    here from `client_data` (epochs included).
    """
    clients = _client_indices(client_data, clients, "clients")
    if history is None:
        print(_NOT_YET.format(hint="history is still None.", solution="04_other_clients.py"))
        return
    problems = []
    if len(history) != rounds:
        problems.append(f"history should hold {rounds} rounds of metrics, it holds {len(history)}.")
    ids = client_data.client_ids
    examples = sum(len(list(client_data.create_tf_dataset_for_client(ids[i]))) for i in clients)
    expected = examples * kit_data.NUM_EPOCHS
    for round_num, metrics in enumerate(history, start=1):
        train = metrics.get("client_work", {}).get("train", {})
        if train.get("num_examples") != expected:
            problems.append(
                f"Round {round_num} trained on {train.get('num_examples')} examples; clients "
                f"{_span(clients)} hold {examples} x {kit_data.NUM_EPOCHS} epochs "
                f"= {expected}."
            )
    accuracies = [m["client_work"]["train"]["sparse_categorical_accuracy"] for m in history
                  if "train" in m.get("client_work", {})]
    summary = collections.OrderedDict(
        (f"round {i}", round(float(a), 3)) for i, a in enumerate(accuracies, 1)
    )
    _verdict(problems, f"Training accuracy on clients {_span(clients)}: {dict(summary)}.")
