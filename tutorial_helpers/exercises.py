"""Checks for the notebooks' exercises.

Each check prints a verdict ("Correct!", "Not right yet", or "Not solved
yet") and returns nothing, so that a check cell shows only the verdict. An
answer still raising NotImplementedError (the exercise as handed out) gets
"not solved yet" and the path of the solution, which is kept in
notebooks/solutions/ so that it is not the first thing a learner sees.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import Mapping

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.proto.v0 import computation_pb2 as pb

from tutorial_helpers import data as kit_data
from tutorial_helpers.expected_results import training_metrics

_NOT_YET = "Not solved yet: {hint} (A solution: notebooks/solutions/{solution}.)"


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """What an exercise check decided: `passed`, the `problems` found, and the `message` it printed.

    The check prints `message` itself (a notebook's check cell may run it
    inside a `with` block), so Jupyter shows nothing more for the result.
    """

    passed: bool
    problems: tuple[str, ...]
    message: str

    def _ipython_display_(self) -> None:
        """Shows nothing: the check has printed its message already."""


def _report(message: str, passed: bool = False, problems: tuple[str, ...] = ()) -> CheckResult:
    print(message)
    return CheckResult(passed, problems or (() if passed else (message,)), message)


def _verdict(problems: list[str], success: str) -> CheckResult:
    if problems:
        return _report("Not right yet:\n  - " + "\n  - ".join(problems), problems=tuple(problems))
    return _report(f"Correct! {success}", passed=True)


def _not_yet(hint: str, solution: str) -> CheckResult:
    return _report(_NOT_YET.format(hint=hint, solution=solution))


def _not_right(problem: str) -> CheckResult:
    return _report(f"Not right yet:\n  - {problem}", problems=(problem,))


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


def check_even_clients_backend(backend, client_data, dataset_type) -> CheckResult:
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
            return _not_yet("materialize still raises NotImplementedError.", "02_even_clients.py")
        except Exception as e:  # the learner's code may raise anything
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
    # Even numbers that `int()` reads but that are not `uri://<index>`: a sign
    # (Python's ids[-2] is a client counted from the end, odd or even by
    # chance), a leading zero, a space, a digit of another script.
    lenient = {"uri://-2": "int() accepts the sign, and ids[-2] is a client counted from the end",
               "uri://04": "a leading zero", "uri:// 4": "a space", "uri://\u0664": "an Arabic-Indic 4",
               "uri://4x": "a prefix match: the index must be all that follows uri://"}
    for uri in (*refused, "uri://x", f"uri://{past_the_end}", *lenient):
        try:
            _run(materialize(uri))
            why = f" ({lenient[uri]}; parse with client_index above)" if uri in lenient else ""
            problems.append(f"{uri!r} should be rejected, but a dataset was returned{why}.")
        except NotImplementedError:
            return _not_yet("materialize still raises NotImplementedError.", "02_even_clients.py")
        except Exception as e:
            if uri not in str(e) and repr(uri) not in str(e):
                problems.append(f"The error for {uri!r} should name it; it says: {e}")
    return _verdict(problems, "Even clients are served, odd and malformed URIs are refused by name.")


def check_label_zero_count(count_label_zero, dataset_type, client_data, num_clients: int = 5) -> CheckResult:
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
        return _not_yet("count_label_zero still raises NotImplementedError.", "03_label_zero.py")
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
    return _verdict(problems, f"{expected} examples labelled 0 on clients {_span(indices)}.")


def _count_examples(client_data, indices) -> int:
    """How many raw examples the clients with these indices hold."""
    ids = client_data.client_ids
    return sum(len(list(client_data.create_tf_dataset_for_client(ids[i]))) for i in indices)


def _train_metrics(history) -> list[Mapping]:
    """Each round's training metrics, from `result.metrics` or from its `client_work/train` part."""
    return [training_metrics(m) for m in history]


# A fresh model (all-zero weights) with the tutorial's settings has a high
# first-round training loss: measured 11.9 on clients 0-4 and 12.8 on 5-9.
# One that starts from a state trained for 3 rounds on 5-9 has 5.5.
_FRESH_ROUND_ONE_LOSS = 8.0


def _history_problems(history, client_data, clients, rounds) -> list[str]:
    problems = []
    if len(history) != rounds:
        problems.append(f"other_history should hold {rounds} rounds of metrics, it holds {len(history)}.")
    examples = _count_examples(client_data, clients)
    expected = examples * kit_data.NUM_EPOCHS
    train = _train_metrics(history)
    for round_num, metrics in enumerate(train, start=1):
        if metrics.get("num_examples") != expected:
            problems.append(
                f"Round {round_num} trained on {metrics.get('num_examples')} examples; clients "
                f"{_span(clients)} hold {examples} x {kit_data.NUM_EPOCHS} epochs = {expected}."
            )
    losses = [float(m.get("loss", np.nan)) for m in train]
    if losses and not problems and losses[0] < _FRESH_ROUND_ONE_LOSS:
        problems.append(
            f"Round 1's loss is {losses[0]:.2f}, far below a fresh model's: start from "
            "iterative_process.initialize(), not from the state trained above."
        )
    if len(losses) > 1 and not problems:
        if np.allclose(losses, losses[0], rtol=1e-6):
            problems.append(
                "Every round gave the same metrics, so every round started from the same model: "
                "pass each round's result.state to the next call of next()."
            )
        elif not losses[-1] < losses[0]:
            problems.append(f"The loss did not fall from round 1 to round {len(losses)} ({losses}): "
                            "is the state carried from round to round?")
    return problems


def _evaluation_problems(evaluation, client_data, eval_clients) -> list[str]:
    if evaluation is None:
        return ["other_evaluation is still None: evaluate the trained model with evaluation_process "
                "(in a context with eval_backend) and keep its current_round_metrics."]
    if not isinstance(evaluation, dict) or "num_examples" not in evaluation:
        return ["other_evaluation should be the dict under "
                "output.metrics['client_work']['eval']['current_round_metrics'], with "
                f"'num_examples', 'loss' and 'sparse_categorical_accuracy'; got {type(evaluation).__name__}."]
    digits = _count_examples(client_data, eval_clients)
    count = int(evaluation["num_examples"])
    if count == digits * kit_data.NUM_EPOCHS:
        return [f"The evaluation saw every digit {kit_data.NUM_EPOCHS} times ({count} examples): "
                "evaluate in a context with eval_backend, which serves one epoch."]
    if count != digits:
        return [f"The evaluation saw {count} digits; clients {_span(eval_clients)} hold {digits}. "
                f"Evaluate on uri://{eval_clients[0]} to uri://{eval_clients[-1]}."]
    # A model of all-zero weights, the initial one, gives every digit probability
    # 1/10, so its loss is ln 10 whatever the data.
    if abs(float(evaluation["loss"]) - np.log(10)) < 1e-3:
        return ["The loss is ln 10 = 2.303, that of the untrained model: give the evaluation the "
                "trained weights, evaluation_process.set_model_weights(evaluation_process.initialize(), "
                "iterative_process.get_model_weights(<your final state>))."]
    return []


def _reproduce_other_clients(client_data, clients, eval_clients, rounds):
    """The exercise done here: `rounds` rounds of FedAvg on `clients` from a fresh
    model, then an evaluation of the result on `eval_clients`, each digit once."""
    from tutorial_helpers import model, remote_data
    from tutorial_helpers.backends import ClientDataBackend

    process = model.build_fed_avg()
    evaluation_process = tff.learning.algorithms.build_fed_eval(model.model_fn)

    def handle(indices):
        return tff.framework.CreateDataDescriptor([f"uri://{i}" for i in indices], model.DATASET_TYPE)

    with remote_data.create_execution_context(ClientDataBackend(client_data)):
        state, history = process.initialize(), []
        for _ in range(rounds):
            result = process.next(state, handle(clients))
            state = result.state
            history.append(result.metrics)
        weights = process.get_model_weights(state)
    one_epoch = ClientDataBackend(client_data, preprocess_fn=lambda ds: kit_data.preprocess(ds, num_epochs=1))
    with remote_data.create_execution_context(one_epoch):
        eval_state = evaluation_process.set_model_weights(evaluation_process.initialize(), weights)
        output = evaluation_process.next(eval_state, handle(eval_clients))
    return _train_metrics(history), output.metrics["client_work"]["eval"]["current_round_metrics"]


def _differ(got, want) -> bool:
    """Whether two rounds' metrics differ by more than summing the clients in another order
    could explain: one example's worth of accuracy, or 0.1 % of the loss."""
    count = max(int(want["num_examples"]), 1)
    return (abs(float(got["sparse_categorical_accuracy"]) - float(want["sparse_categorical_accuracy"]))
            > 1.5 / count or abs(float(got["loss"]) - float(want["loss"])) > 1e-3 * float(want["loss"]))


def _reproduction_problems(history, evaluation, client_data, clients, eval_clients) -> list[str]:
    """Compares the learner's metrics with the check's own run of the exercise.

    On one machine TFF's training is deterministic, so a right answer gives
    the same figures, whatever the CPU; a wrong model (the state trained
    earlier in the notebook, a single round, another learning rate) does not.
    """
    train, want_evaluation = _reproduce_other_clients(client_data, clients, eval_clients, len(history))
    for round_num, (got, want) in enumerate(zip(_train_metrics(history), train, strict=True), start=1):
        if _differ(got, want):
            return [f"Round {round_num} gave accuracy {float(got['sparse_categorical_accuracy']):.4f} and loss "
                    f"{float(got['loss']):.4f}; the check ran the same training and got "
                    f"{float(want['sparse_categorical_accuracy']):.4f} and {float(want['loss']):.4f}. Use "
                    "iterative_process as built above, a fresh state, and the URIs in order."]
    if _differ(evaluation, want_evaluation):
        return [f"The evaluation gave accuracy {float(evaluation['sparse_categorical_accuracy']):.3f}; the "
                f"model trained in your {len(history)} rounds on clients {_span(clients)} gives "
                f"{float(want_evaluation['sparse_categorical_accuracy']):.3f} (the check trained and "
                "evaluated it itself). Evaluate the weights of the last state of this training "
                "(iterative_process.get_model_weights(other_state)), not `state` from above."]
    return []


def check_other_clients(history, evaluation, client_data, clients=range(5, 10), eval_clients=range(0, 5),
                        rounds: int = 3) -> CheckResult:
    """Exercise 04: train `rounds` rounds by URI on `clients`, then evaluate on `eval_clients`.

    Each round must have trained on exactly those clients' examples, counted
    here from `client_data` (epochs included), starting from the previous
    round's state; the evaluation must have seen each digit of `eval_clients`
    once, with the trained weights. The figures are then compared with the
    check's own run of the same training and evaluation (`model.build_fed_avg`,
    the kit's model), which takes a few seconds.
    """
    clients = _client_indices(client_data, clients, "clients")
    eval_clients = _client_indices(client_data, eval_clients, "eval_clients")
    if history is None:
        return _not_yet("other_history is still None.", "04_other_clients.py")
    problems = _history_problems(history, client_data, clients, rounds)
    problems += _evaluation_problems(evaluation, client_data, eval_clients)
    if not problems:
        problems = _reproduction_problems(history, evaluation, client_data, clients, eval_clients)
    accuracies = [round(float(m.get("sparse_categorical_accuracy", np.nan)), 3) for m in _train_metrics(history)]
    success = f"Training accuracy on clients {_span(clients)} by round: {accuracies}"
    if not problems:
        success += (f"; on clients {_span(eval_clients)}, never trained on: "
                    f"{float(evaluation['sparse_categorical_accuracy']):.3f}.")
    return _verdict(problems, success)


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
    indices = _client_indices(client_data, range(num_clients), "num_clients")
    inner = _CountingBackend(client_data)
    not_yet = ("materialize still raises NotImplementedError.", "05_caching_backend.py")
    try:
        backend = caching_backend_class(inner)
    except NotImplementedError:
        return _not_yet(*not_yet)
    except Exception as e:  # the learner's code may raise anything
        return _not_right(f"CachingBackend(inner) raised {type(e).__name__}: {e}")

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
            datasets = _run(one_round(round_uris))
        except NotImplementedError:
            return _not_yet(*not_yet)
        except Exception as e:
            return _not_right(f"In {name}, materialize raised {type(e).__name__}: {e}")
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
    return _verdict(problems, f"Clients {_span(indices)} were fetched once in round 1 and served from the "
                       "cache in round 2: over HTTP, round 2 would send no request.")


def check_worker_side_filter(preprocess_fn, client_data, dataset_type, num_clients: int = 3) -> CheckResult:
    """Exercise 06: a preprocessing function, run in a TFF worker, that keeps digits 0 to 4.

    Builds the dataset computation of `client_data.preprocess(preprocess_fn)`,
    composes it with a computation that counts the labels of the clients'
    examples, runs that on the first `num_clients` clients in a one-worker
    context (the controller sends only their ids), and compares with the
    tutorial's preprocessing of the examples labelled 0 to 4, done here.
    """
    from tutorial_helpers.multi_worker import create_multi_worker_context

    indices = _client_indices(client_data, range(num_clients), "num_clients")
    ids = [client_data.client_ids[i] for i in indices]
    try:
        local = preprocess_fn(client_data.create_tf_dataset_for_client(ids[0]))
    except NotImplementedError:
        return _not_yet("keep_digits_0_to_4 still raises NotImplementedError.", "06_worker_side_filter.py")
    except Exception as e:  # the learner's code may raise anything
        return _not_right(f"On a client's raw dataset it raised {type(e).__name__}: {e}")
    spec = getattr(local, "element_spec", None)
    element_type = tff.types.tensorflow_to_type(spec) if spec is not None else None
    if element_type is None or not dataset_type.element.is_assignable_from(element_type):
        return _not_right(f"The function should return a dataset of {dataset_type.element}, "
                          f"as the learning process takes; it returned "
                          f"{spec if spec is not None else local!r}. Apply the tutorial's "
                          "preprocessing (data.preprocess) to what you keep.")

    # What the worker reports of each client's dataset: its label counts, the
    # sum of its labels weighted by position (which changes when the order
    # does: no shuffle, or a shuffle of other elements) and the sum of its
    # pixels (which changes when they are scaled again). Summed over the
    # clients, the controller receives these 12 numbers and no example.
    @tff.tensorflow.computation(dataset_type)
    def fingerprint(dataset):
        def add(state, batch):
            counts, position, weighted, pixels = state
            labels = tf.reshape(batch["y"], [-1])
            counts += tf.math.bincount(labels, minlength=10, maxlength=10, dtype=tf.int32)
            weighted += (position + 1) * tf.cast(tf.reduce_sum(labels), tf.int64)
            pixels += tf.reduce_sum(tf.cast(batch["x"], tf.float64))
            return counts, position + 1, weighted, pixels

        counts, _, weighted, pixels = dataset.reduce(
            (tf.zeros([10], tf.int32), tf.constant(0, tf.int64), tf.constant(0, tf.int64),
             tf.constant(0.0, tf.float64)), add)
        return counts, weighted, pixels

    @tff.federated_computation(tff.FederatedType(dataset_type, tff.CLIENTS))
    def total_fingerprint(datasets):
        return tff.federated_sum(tff.federated_map(fingerprint, datasets))

    dataset_computation = client_data.preprocess(preprocess_fn).dataset_computation
    on_workers = tff.simulation.compose_dataset_computation_with_computation(
        dataset_computation, total_fingerprint)
    with create_multi_worker_context(1) as ctx:
        counts, weighted, pixels = on_workers(ids)
        sent = ctx.client_value_bytes
    counts, weighted, pixels = np.asarray(counts), int(weighted), float(pixels)
    expected_counts, expected_weighted, expected_pixels = np.zeros(10, np.int64), 0, 0.0
    for client_id in ids:
        raw = client_data.create_tf_dataset_for_client(client_id)
        batches = kit_data.preprocess(raw.filter(lambda e: e["label"] < 5)).as_numpy_iterator()
        for position, batch in enumerate(batches, start=1):
            expected_counts += np.bincount(batch["y"].reshape(-1), minlength=10)
            expected_weighted += position * int(batch["y"].sum())
            expected_pixels += float(batch["x"].astype(np.float64).sum())
    problems = []
    if counts[5:].any():
        problems.append(f"Examples labelled 5 to 9 reached the training: {counts[5:].sum()} of them "
                        f"(labels 0-9: {counts.tolist()}). Filter on the raw example's 'label'.")
    if not np.array_equal(counts[:5], expected_counts[:5]):
        problems.append(f"Digits 0 to 4 should count {expected_counts[:5].tolist()} on clients "
                        f"{_span(indices)} ({kit_data.NUM_EPOCHS} epochs, as the tutorial's "
                        f"preprocessing repeats them); the worker counted {counts[:5].tolist()}.")
    elif not np.isclose(pixels, expected_pixels, rtol=1e-6):
        problems.append(f"The right digits, but not the tutorial's pixels: they add up to {pixels:,.1f} "
                        f"instead of {expected_pixels:,.1f}. The raw pixels are already in [0, 1]: "
                        "pass them to data.preprocess unchanged.")
    elif weighted != expected_weighted:
        problems.append("The right examples, in another order than the tutorial's preprocessing "
                        "gives: filter the raw examples first, then apply data.preprocess (which "
                        "repeats and shuffles) to what you keep.")
    return _verdict(problems, f"The worker kept {int(counts.sum())} examples labelled 0 to 4 "
                       f"({kit_data.NUM_EPOCHS} epochs) of clients {_span(indices)}, and the "
                       f"controller sent only their ids ({sent} bytes).")


def _expected_groups(catalogue: Mapping[str, list[str]], clients: list[str]) -> dict[str, list[str]]:
    site_of = {client: site for site, held in catalogue.items() for client in held}
    groups: dict[str, list[str]] = {}
    for client in clients:
        groups.setdefault(site_of[client], []).append(client)
    return groups


def _grouping_problem(group_by_site, catalogue, clients: list[str], case: str) -> str | None:
    """What is wrong with `group_by_site(catalogue, clients)` for one round, or None."""
    try:
        got = group_by_site(catalogue, list(clients))
    except NotImplementedError:
        raise
    except Exception as e:  # the learner's code may raise anything
        return f"For {case} it raised {type(e).__name__}: {e}"
    if not isinstance(got, Mapping):
        return f"For {case} it returned {type(got).__name__}; return a dict from site name to a list of client ids."
    expected = _expected_groups(catalogue, clients)
    got = {site: list(ids) for site, ids in got.items()}
    empty = sorted(site for site, ids in got.items() if not ids)
    if empty:
        return (f"For {case} it gives {', '.join(empty)} an empty list: a site with none of the round's "
                "clients gets no work, so leave it out of the result.")
    unknown = sorted(set(got) - set(catalogue))
    if unknown:
        return f"For {case} it names sites the catalogue does not have: {unknown}."
    for site, ids in got.items():
        strangers = [client for client in ids if client not in catalogue[site]]
        if strangers:
            return (f"For {case} it sends {strangers[0]!r} to {site!r}, which does not hold it "
                    f"(its site would fail to find its data). Look each client up in the catalogue.")
    for site, ids in expected.items():
        if sorted(got.get(site, [])) != sorted(ids):
            return (f"For {case}, {site!r} should get {len(ids)} clients ({', '.join(ids)}), and gets "
                    f"{len(got.get(site, []))}: each client of the round goes to its site, once.")
        if got[site] != ids:
            return (f"For {case}, {site!r} gets its clients in another order than the round's "
                    f"({', '.join(got[site])} instead of {', '.join(ids)}). Keep the round's order: "
                    "the sum of the clients' updates then adds up the same way every time.")
    return None


def check_group_by_site(group_by_site, catalogue: Mapping[str, list[str]]) -> CheckResult:
    """Exercise 07: a function that groups a round's clients by the site that holds them.

    `group_by_site(catalogue, clients)` must return {site: [client ids]}, each
    client at the site whose catalogue lists it, in the round's order, sites
    without clients left out; and raise LookupError naming a client that no
    site holds. Tried on rounds drawn from `catalogue` (every site, one site
    absent, a client twice) and on a round with a client nobody holds.
    """
    from tutorial_helpers.sites import sample_clients

    sites = list(catalogue)
    if len(sites) < 2 or any(len(catalogue[site]) < 2 for site in sites):
        raise ValueError("check_group_by_site needs a catalogue of at least two sites holding two clients "
                         f"each; got {({site: len(ids) for site, ids in catalogue.items()})}.")
    everyone = sum(len(ids) for ids in catalogue.values())
    without_last = {site: catalogue[site] for site in sites[:-1]}
    rounds = [
        ("a round of 10 clients drawn from every site", sample_clients(catalogue, min(10, everyone), seed=7)),
        (f"a round without {sites[-1]!r}'s clients", sample_clients(without_last, 4, seed=8)),
        ("a round that names a client twice", [catalogue[sites[1]][0], catalogue[sites[0]][0],
                                              catalogue[sites[1]][0]]),
        ("a round in the catalogue's order, reversed", [c for s in reversed(sites) for c in catalogue[s][:2]]),
    ]
    given = copy.deepcopy(dict(catalogue))  # The learner's function gets a copy; the notebook's stays as it is.
    try:
        problems = [p for case, clients in rounds if (p := _grouping_problem(group_by_site, given, clients, case))]
    except NotImplementedError:
        return _not_yet("group_by_site still raises NotImplementedError.", "07_group_by_site.py")
    if given != dict(catalogue):
        problems.append("It changed the catalogue it was given (sorted, or added or removed clients): read it, "
                        "do not modify it; the context and the sampling use it too.")
        given = copy.deepcopy(dict(catalogue))
    known = catalogue[sites[0]][0]
    # Strangers: one after every id, one that sorts among a site's own ids, one alone in its round.
    for stranger, round_with_stranger in [("f9999_99", [known, "f9999_99"]),
                                          (catalogue[sites[1]][0] + "x", [catalogue[sites[1]][0] + "x", known]),
                                          ("f0000_00", ["f0000_00"])]:
        try:
            got = group_by_site(given, round_with_stranger)
        except LookupError as e:
            if stranger not in str(e) or known in str(e):
                problems.append(f"For a round with a client no site holds it raised {type(e).__name__}: {e}; "
                                f"name that client ({stranger!r}), and only it, in the message, so that the "
                                "person who sees it knows which one.")
                break
        except Exception as e:  # the learner's code may raise anything
            problems.append(f"For a round with a client no site holds it raised {type(e).__name__}: {e}; "
                            f"raise LookupError (KeyError is one) naming the client.")
            break
        else:
            problems.append(f"For a round with a client no site holds ({stranger!r}) it returned {got!r} "
                            "instead of raising LookupError: the round would quietly train fewer clients "
                            "than asked, or send the client to a site that cannot load it.")
            break
    return _verdict(problems, f"Each client goes to its site, in the round's order, over "
                              f"{len(rounds)} rounds; a client no site holds is refused by name.")


def check_would_run(would_run, folder, approved, changed) -> CheckResult:
    """Exercise 08: a function that tells whether a site's gatekeeper would let a computation run.

    `would_run(folder, computation)` must return True when the fingerprint of
    what the site is sent of `computation` is on the approval list in
    `folder`, and False otherwise. Tried on a copy of `folder` (so the site's
    own list is never touched): with `approved` (on the list) and `changed`
    (not on it); then with the approval withdrawn (its line commented out);
    then with a line that has `approved`'s description but another
    fingerprint; then with a fingerprint that shares only its first half.
    """
    import shutil
    import tempfile
    from pathlib import Path

    from tutorial_helpers.gatekeeper import APPROVALS, fingerprint, read_approvals, site_part

    wanted = fingerprint(site_part(approved))
    approvals = read_approvals(folder)
    if wanted not in approvals:
        raise ValueError(f"check_would_run needs `approved` to be on the list in {folder}: approve it first.")
    with tempfile.TemporaryDirectory(prefix="kit-exercise-08-") as scratch:
        copy_ = Path(scratch) / "gatekeeper"
        shutil.copytree(folder, copy_, ignore=shutil.ignore_patterns("audit.log"))
        approvals_file = copy_ / APPROVALS
        original = approvals_file.read_text()
        withdrawn = "".join(f"# {line}" if line.startswith(wanted) else line
                            for line in original.splitlines(keepends=True))
        impostor = f"{'0' * 64} {approvals[wanted]}\n"
        # Shares the approved fingerprint's first 32 digits: a prefix match would accept it.
        near_miss = f"{wanted[:32]}{'0' * 32 if wanted[32:] != '0' * 32 else '1' * 32} {approvals[wanted]}\n"
        cases = [
            (approved, original, True, "the site's approved training, on the list"),
            (changed, original, False, "a changed model, not on the list"),
            (approved, withdrawn, False, "the approved training after the site withdrew it (its line commented "
                                         "out with #)"),
            (approved, impostor, False, "the approved training, when the list holds only a line with its "
                                        "description and another fingerprint"),
            (approved, near_miss, False, "the approved training, when the list holds only a fingerprint that "
                                         "starts with the same 32 digits as its own"),
        ]
        problems = []
        for computation, text, expected, case in cases:
            approvals_file.write_text(text)
            try:
                got = would_run(copy_, computation)
            except NotImplementedError:
                return _not_yet("would_run still raises NotImplementedError.", "08_would_run.py")
            except Exception as e:  # the learner's code may raise anything
                problems.append(f"For {case} it raised {type(e).__name__}: {e}.")
                continue
            if not isinstance(got, (bool, np.bool_)):
                problems.append(f"For {case} it returned {got!r}: return True or False.")
            elif bool(got) != expected:
                problems.append(f"For {case} it returned {got}, not {expected}. " + _WOULD_RUN_HINTS[case])
    return _verdict(problems, "It fingerprints what the site is sent and reads the site's list as it is now, "
                              "as the gatekeeper does.")


_WOULD_RUN_HINTS = {
    "the site's approved training, on the list":
        "The gatekeeper fingerprints what the site is sent of a computation: `fingerprint(site_part(...))`, "
        "not the whole computation.",
    "a changed model, not on the list":
        "Its fingerprint is not on the list: look the fingerprint up among the list's fingerprints.",
    "the approved training after the site withdrew it (its line commented out with #)":
        "A line that starts with # is a comment: read the list with `read_approvals(folder)`, and read it at "
        "every call, since the site may edit it at any time.",
    "the approved training, when the list holds only a line with its description and another fingerprint":
        "Compare fingerprints, not descriptions: anyone can write a description.",
    "the approved training, when the list holds only a fingerprint that starts with the same 32 digits as its own":
        "Compare whole fingerprints: a prefix can be matched by another computation made to share it.",
}
