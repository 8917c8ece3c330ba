"""The exercise checks accept the solutions and refuse the unsolved and wrong answers."""

import asyncio
import collections
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.proto.v0 import computation_pb2 as pb

from tutorial_helpers import data, exercises, model, remote_data
from tutorial_helpers.backends import ClientDataBackend

SOLUTIONS = Path(__file__).resolve().parent.parent / "notebooks" / "solutions"
DATASET_TYPE = model.DATASET_TYPE


def run_solution(name, **notebook_names):
    """Runs a solution file in a namespace holding the notebook's names, as %load would."""
    namespace = dict(notebook_names)
    exec(compile((SOLUTIONS / name).read_text(), name, "exec"), namespace)
    return namespace


class Unsolved(remote_data.DataBackend):
    async def materialize(self, data, type_spec):
        raise NotImplementedError


def test_even_clients(emnist):
    train, _ = emnist
    namespace = run_solution(
        "02_even_clients.py", remote_data=remote_data, preprocess=data.preprocess, emnist_train=train
    )
    result = exercises.check_even_clients_backend(namespace["even_backend"], train, DATASET_TYPE)
    assert result.passed, result.message

    result = exercises.check_even_clients_backend(Unsolved(), train, DATASET_TYPE)
    assert not result.passed and "Not solved yet" in result.message

    # Serving every client is wrong: odd ones must be refused.
    result = exercises.check_even_clients_backend(ClientDataBackend(train), train, DATASET_TYPE)
    assert not result.passed and "'uri://1' should be rejected" in result.message

    # The parse of the original tutorial's era, with the parity rule added:
    # int() takes a sign, so uri://-2 is served as ids[-2], writer 97, an odd
    # client who did not agree; and uri://04 and uri:// 4 as client 4.
    class LenientParse(remote_data.DataBackend):
        async def materialize(self, data_, type_spec):
            index = int(data_.uri.removeprefix("uri://"))
            if index % 2 or index >= len(train.client_ids):
                raise ValueError(f"{data_.uri} is not served")
            return data.preprocess(train.create_tf_dataset_for_client(train.client_ids[index]))

    result = exercises.check_even_clients_backend(LenientParse(), train, DATASET_TYPE)
    out = result.message
    assert out.startswith("Not right yet")
    for uri in ("'uri://-2'", "'uri://04'", "'uri:// 4'", "'uri://\u0664'"):
        assert f"{uri} should be rejected, but a dataset was returned" in out
    assert "ids[-2] is a client counted from the end" in out

    # A prefix match (re.match, not fullmatch): uri://4x is served as client 4.
    class PrefixMatch(remote_data.DataBackend):
        async def materialize(self, data_, type_spec):
            match = re.match(r"uri://(\d+)", data_.uri)
            if match is None or int(match.group(1)) % 2 or int(match.group(1)) >= len(train.client_ids):
                raise ValueError(f"{data_.uri} is not served")
            return data.preprocess(train.create_tf_dataset_for_client(train.client_ids[int(match.group(1))]))

    result = exercises.check_even_clients_backend(PrefixMatch(), train, DATASET_TYPE)
    assert not result.passed
    assert ("'uri://4x' should be rejected, but a dataset was returned (a prefix match: the index must be "
            "all that follows uri://; parse with client_index above).") in result.problems

    # Off by one: uri://<i> served as the client after i.
    class OffByOne(remote_data.DataBackend):
        async def materialize(self, data_, type_spec):
            index = exercises_client_index(data_.uri)
            return data.preprocess(train.create_tf_dataset_for_client(train.client_ids[index + 1]))

    result = exercises.check_even_clients_backend(OffByOne(), train, DATASET_TYPE)
    assert not result.passed and "uri://0 should be the data of client 0" in result.message


def exercises_client_index(uri):
    """The 02 notebook's parse, refusing odd clients (as the solution does)."""
    from tutorial_helpers.backends import parse_client_uri

    index = parse_client_uri(uri)
    if index % 2:
        raise ValueError(f"{uri} is not served")
    return index


@pytest.mark.process
def test_label_zero(emnist):
    train, _ = emnist
    namespace = run_solution("03_label_zero.py", tff=tff, tf=tf, np=np, dataset_type=DATASET_TYPE)

    def unsolved(datasets):
        raise NotImplementedError

    namespace_ = namespace
    # A common slip: forgetting the sum, so there is one count per client.
    forgot_sum = tff.federated_computation(
        lambda datasets: tff.federated_map(namespace_["count_zeros_on_client"], datasets),
        tff.FederatedType(DATASET_TYPE, tff.CLIENTS),
    )

    with remote_data.create_execution_context(ClientDataBackend(train)):
        result = exercises.check_label_zero_count(namespace["count_label_zero"], DATASET_TYPE, train)
        assert result.passed, result.message
        result = exercises.check_label_zero_count(unsolved, DATASET_TYPE, train)
        assert not result.passed and "Not solved yet" in result.message
        result = exercises.check_label_zero_count(forgot_sum, DATASET_TYPE, train)
        assert not result.passed and "Did you sum over the clients?" in result.message


@pytest.mark.process
def test_other_clients(emnist):
    train, _ = emnist
    process = model.build_fed_avg()
    evaluation_process = tff.learning.algorithms.build_fed_eval(model.model_fn)
    backend = ClientDataBackend(train)
    eval_backend = ClientDataBackend(train, preprocess_fn=lambda ds: data.preprocess(ds, num_epochs=1))
    namespace = run_solution(
        "04_other_clients.py", tff=tff, remote_data=remote_data, backend=backend, eval_backend=eval_backend,
        dataset_type=DATASET_TYPE, iterative_process=process, evaluation_process=evaluation_process,
    )
    history, evaluation = namespace["other_history"], namespace["other_evaluation"]
    result = exercises.check_other_clients(history, evaluation, train)
    assert result.passed, result.message
    result = exercises.check_other_clients(None, None, train)
    assert not result.passed and "Not solved yet" in result.message
    result = exercises.check_other_clients(history[:2], evaluation, train)  # Too few rounds.
    assert not result.passed and "should hold 3 rounds" in result.message
    result = exercises.check_other_clients(history, None, train)  # Training done, evaluation not yet.
    assert not result.passed and "other_evaluation is still None" in result.message

    # The typical slips, run for real: each round from the initial state; the
    # evaluation with the training backend (every digit NUM_EPOCHS times); the
    # untrained weights.
    handle = namespace["other_handle"]
    eval_handle = namespace["eval_handle"]
    with remote_data.create_execution_context(backend):
        initial = process.initialize()
        not_carried = [process.next(initial, handle).metrics for _ in range(3)]
        trained_further = []
        continued = namespace["other_state"]
        for _ in range(3):
            result = process.next(continued, handle)
            continued = result.state
            trained_further.append(result.metrics)
        all_epochs = evaluation_process.next(
            evaluation_process.set_model_weights(
                evaluation_process.initialize(), process.get_model_weights(namespace["other_state"])
            ),
            eval_handle,
        )
    with remote_data.create_execution_context(eval_backend):
        untrained = evaluation_process.next(evaluation_process.initialize(), eval_handle)
    result = exercises.check_other_clients(trained_further, evaluation, train)  # Not a fresh model.
    assert not result.passed and "far below a fresh model's" in result.message
    result = exercises.check_other_clients(not_carried, evaluation, train)
    assert not result.passed and "pass each round's result.state" in result.message
    metrics = lambda output: output.metrics["client_work"]["eval"]["current_round_metrics"]  # noqa: E731
    result = exercises.check_other_clients(history, metrics(all_epochs), train)
    assert not result.passed and "evaluate in a context with eval_backend" in result.message
    result = exercises.check_other_clients(history, metrics(untrained), train)
    assert not result.passed and "that of the untrained model" in result.message

    # The right count of digits, but the wrong model: the notebook's earlier
    # `state` (trained on writers 0-4, so measured on its own training
    # writers), or the model after the first of the three rounds.
    with remote_data.create_execution_context(backend):
        earlier = process.initialize()
        for _ in range(3):
            earlier = process.next(earlier, eval_handle).state
        first_round = process.next(process.initialize(), handle).state
    with remote_data.create_execution_context(eval_backend):
        wrong = {name: evaluation_process.next(evaluation_process.set_model_weights(
                     evaluation_process.initialize(), process.get_model_weights(weights_of)), eval_handle)
                 for name, weights_of in (("earlier state", earlier), ("one round", first_round))}
    for name, output in wrong.items():
        result = exercises.check_other_clients(history, metrics(output), train)
        out = result.message
        assert out.startswith("Not right yet") and "Evaluate the weights of the last state" in out, name
    # A made-up history with the right counts and a falling loss.
    made_up = [{"client_work": {"train": {**m["client_work"]["train"], "sparse_categorical_accuracy": 0.5}}}
               for m in history]
    result = exercises.check_other_clients(made_up, evaluation, train)
    assert not result.passed and "the check ran the same training" in result.message


def small_client_data(num_clients: int):
    """`num_clients` writers with 1 to 3 examples each, in the EMNIST element format."""
    rng = np.random.default_rng(0)
    clients = {}
    for i in range(num_clients):
        n = 1 + i % 3
        clients[f"writer_{i:02d}"] = {
            "label": rng.integers(0, 10, n).astype(np.int32),
            "pixels": rng.random((n, 28, 28)).astype(np.float32),
        }
    return tff.simulation.datasets.TestClientData(clients)


@pytest.mark.parametrize("num_clients", [4, 7])
def test_the_even_clients_check_fits_the_data_it_is_given(num_clients):
    small = small_client_data(num_clients)
    namespace = run_solution(
        "02_even_clients.py", remote_data=remote_data, preprocess=data.preprocess, emnist_train=small
    )
    result = exercises.check_even_clients_backend(namespace["even_backend"], small, DATASET_TYPE)
    assert result.passed, result.message
    result = exercises.check_even_clients_backend(ClientDataBackend(small), small, DATASET_TYPE)
    out = result.message
    assert "'uri://1' should be rejected" in out and "uri://97" not in out


def fake_history(examples_per_round: int, rounds: int = 3, losses=(10.0, 6.0, 4.0)):
    return [
        {"client_work": {"train": {"num_examples": examples_per_round, "loss": losses[i],
                                   "sparse_categorical_accuracy": 0.5}}}
        for i in range(rounds)
    ]


def fake_evaluation(num_examples: int, loss: float = 1.0):
    return {"num_examples": num_examples, "loss": loss, "sparse_categorical_accuracy": 0.6}


@pytest.mark.process
def test_the_training_check_counts_the_examples_of_the_clients_it_is_given():
    small = small_client_data(4)  # 1, 2, 3, 1 examples.
    check = exercises.check_other_clients
    six = 6 * data.NUM_EPOCHS  # Clients 0-2 hold 6 examples.
    # Right counts, falling loss, but made up: the check's own run of the
    # training on these clients refuses it.
    result = check(fake_history(3 * data.NUM_EPOCHS), fake_evaluation(3), small, clients=[1, 3], eval_clients=[0, 1])
    out = result.message
    assert out.startswith("Not right yet") and "the check ran the same training" in out
    result = check(fake_history(99), fake_evaluation(1), small, clients=range(0, 3), eval_clients=[3])
    assert not result.passed and f"clients 0-2 hold 6 x {data.NUM_EPOCHS} epochs = {six}" in result.message
    result = check(fake_history(six, losses=(10.0, 10.0, 10.0)), fake_evaluation(1), small, clients=range(0, 3),
          eval_clients=[3])
    assert not result.passed and "Every round gave the same metrics" in result.message
    result = check(fake_history(six, losses=(10.0, 11.0, 12.0)), fake_evaluation(1), small, clients=range(0, 3),
          eval_clients=[3])
    assert not result.passed and "The loss did not fall" in result.message
    result = check(fake_history(six), fake_evaluation(4), small, clients=range(0, 3), eval_clients=[3])
    assert not result.passed and "The evaluation saw 4 digits; clients 3 hold 1" in result.message
    result = check(fake_history(six), fake_evaluation(1, loss=float(np.log(10))), small, clients=range(0, 3),
          eval_clients=[3])
    assert not result.passed and "untrained model" in result.message
    result = check(fake_history(six, losses=(2.0, 1.5, 1.0)), fake_evaluation(1), small, clients=range(0, 3),
          eval_clients=[3])
    assert not result.passed and "far below a fresh model's" in result.message
    result = check(fake_history(six), [0.5], small, clients=range(0, 3), eval_clients=[3])
    assert not result.passed and "should be the dict under" in result.message


def test_the_checks_reject_clients_the_data_does_not_have():
    small = small_client_data(4)
    with pytest.raises(ValueError, match=r"clients must name .* index from 0 to 3 .* got \[4, 5, 6\]"):
        exercises.check_other_clients(fake_history(0), None, small, clients=range(3, 7))
    with pytest.raises(ValueError, match=r"eval_clients must name .* got \[9\]"):
        exercises.check_other_clients(fake_history(0), None, small, clients=[0], eval_clients=[9])
    with pytest.raises(ValueError, match=r"num_clients must name at least one client"):
        exercises.check_label_zero_count(lambda handle: 0, DATASET_TYPE, small, num_clients=0)
    with pytest.raises(ValueError, match=r"num_clients .* got \[4\]"):
        exercises.check_label_zero_count(lambda handle: 0, DATASET_TYPE, small, num_clients=5)


def test_caching_backend(emnist):
    train, _ = emnist
    namespace = run_solution("05_caching_backend.py", asyncio=asyncio, remote_data=remote_data)
    result = exercises.check_caching_backend(namespace["CachingBackend"], train, DATASET_TYPE)
    assert result.passed, result.message

    class UnsolvedCache(remote_data.DataBackend):  # The exercise as handed out.
        def __init__(self, inner):
            self.inner = inner

        async def materialize(self, data, type_spec):
            raise NotImplementedError

    result = exercises.check_caching_backend(UnsolvedCache, train, DATASET_TYPE)
    assert not result.passed and "Not solved yet" in result.message

    class CachePerCall(UnsolvedCache):  # A cache that lives only as long as one call.
        async def materialize(self, data, type_spec):
            cache = {}
            if data.uri not in cache:
                cache[data.uri] = await self.inner.materialize(data, type_spec)
            return cache[data.uri]

    result = exercises.check_caching_backend(CachePerCall, train, DATASET_TYPE)
    out = result.message
    assert "Round 2 asked the inner backend 5 more times" in out
    assert "fetch under way" not in out  # Its trouble is not the duplicate: it keeps nothing.

    class OneDatasetForAll(UnsolvedCache):  # Cached, but not keyed on the URI.
        dataset = None

        async def materialize(self, data, type_spec):
            if self.dataset is None:
                self.dataset = await self.inner.materialize(data, type_spec)
            return self.dataset

    result = exercises.check_caching_backend(OneDatasetForAll, train, DATASET_TYPE)
    assert not result.passed and "Is the cache keyed on data.uri?" in result.message

    class ResultsOnly(UnsolvedCache):  # Caches results: a URI named twice in a round is fetched twice.
        def __init__(self, inner):
            super().__init__(inner)
            self.cache = {}

        async def materialize(self, data, type_spec):
            if data.uri not in self.cache:
                self.cache[data.uri] = await self.inner.materialize(data, type_spec)
            return self.cache[data.uri]

    result = exercises.check_caching_backend(ResultsOnly, train, DATASET_TYPE)
    out = result.message
    assert out.startswith("Not right yet") and "Round 1 names uri://0 twice, and it was fetched twice" in out
    assert "Round 2" not in out  # Its cache does outlive a round.


def test_the_caching_solution_survives_a_round_that_failed_or_was_cancelled(emnist):
    """The DataExecutor cancels a round's other fetches when one fails; a URI cancelled
    with its round, or whose fetch failed, is fetched again in the next round."""
    train, _ = emnist
    caching_backend = run_solution("05_caching_backend.py", asyncio=asyncio,
                                   remote_data=remote_data)["CachingBackend"]

    class SlowOnce(remote_data.DataBackend):
        def __init__(self):
            self.calls = 0

        async def materialize(self, data_, type_spec):
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError("the service went down")
            await asyncio.sleep(0.05)
            return await ClientDataBackend(train).materialize(data_, type_spec)

    async def rounds():
        backend = caching_backend(SlowOnce())
        ref = pb.Data(uri="uri://1")
        with pytest.raises(ConnectionError):
            await backend.materialize(ref, DATASET_TYPE)  # The fetch failed.
        in_flight = asyncio.ensure_future(backend.materialize(ref, DATASET_TYPE))
        await asyncio.sleep(0.01)
        in_flight.cancel()  # Its round was cancelled.
        with pytest.raises(asyncio.CancelledError):
            await in_flight
        return await backend.materialize(ref, DATASET_TYPE), backend.inner.calls

    dataset, calls = asyncio.run(rounds())
    assert isinstance(dataset, tf.data.Dataset) and calls == 3


@pytest.mark.process
def test_worker_side_filter(emnist):
    train, _ = emnist
    namespace = run_solution("06_worker_side_filter.py", data=data)
    result = exercises.check_worker_side_filter(namespace["keep_digits_0_to_4"], train, DATASET_TYPE)
    assert result.passed and "controller sent only their ids" in result.message

    def unsolved(dataset):
        raise NotImplementedError

    result = exercises.check_worker_side_filter(unsolved, train, DATASET_TYPE)
    assert not result.passed and "Not solved yet" in result.message

    # Off by one: the 5s are kept too.
    result = exercises.check_worker_side_filter(
        lambda dataset: data.preprocess(dataset.filter(lambda e: e["label"] <= 5)), train, DATASET_TYPE)
    assert not result.passed and "Examples labelled 5 to 9 reached the training" in result.message

    # Pixels divided by 255 a second time, epochs repeated but not shuffled:
    # the right labels, so only the examples themselves tell.
    def scaled_twice(dataset):
        low = dataset.filter(lambda e: e["label"] < 5).repeat(data.NUM_EPOCHS)
        return low.map(lambda e: collections.OrderedDict(x=tf.reshape(e["pixels"] / 255.0, [-1, 784]),
                                                         y=tf.reshape(e["label"], [-1, 1])))

    result = exercises.check_worker_side_filter(scaled_twice, train, DATASET_TYPE)
    assert not result.passed and "not the tutorial's pixels" in result.message

    def not_shuffled(dataset):  # Right pixels, in the raw order.
        return scaled_twice(dataset.map(lambda e: {"label": e["label"], "pixels": e["pixels"] * 255.0}))

    result = exercises.check_worker_side_filter(not_shuffled, train, DATASET_TYPE)
    assert not result.passed and "in another order than the tutorial's preprocessing" in result.message

    # Filtered after the preprocessing: the right digits, shuffled among the others.
    result = exercises.check_worker_side_filter(
        lambda dataset: data.preprocess(dataset).filter(lambda b: b["y"][0, 0] < 5), train, DATASET_TYPE)
    assert not result.passed and "in another order than the tutorial's preprocessing" in result.message

    # Filtered, but not preprocessed: not what the learning process takes.
    result = exercises.check_worker_side_filter(
        lambda dataset: dataset.filter(lambda e: e["label"] < 5), train, DATASET_TYPE)
    assert not result.passed and "Apply the tutorial's preprocessing" in result.message


def test_a_check_prints_its_message_and_jupyter_shows_nothing_more(capsys):
    """The notebook shows what the check printed; the returned result adds no Out[] line."""
    small = small_client_data(4)
    result = exercises.check_other_clients(None, None, small, clients=[0], eval_clients=[1])
    assert capsys.readouterr().out == result.message + "\n"
    assert result.problems and not result.passed
    from IPython.core.formatters import DisplayFormatter

    # What Jupyter's display hook makes of a cell's last value: no data, so no Out[] line
    # (ipykernel sends none); an object without _ipython_display_ would show its repr.
    assert DisplayFormatter().format(result) == ({}, {})
    assert "text/plain" in DisplayFormatter().format(object())[0]


CATALOGUE = {"hospital": [f"h{i}" for i in range(12)], "clinic": [f"c{i}" for i in range(6)], "practice": ["p0", "p1"]}


def test_group_by_site_passes_the_solution_and_refuses_each_wrong_answer():
    solution = run_solution("07_group_by_site.py")["group_by_site"]
    result = exercises.check_group_by_site(solution, CATALOGUE)
    assert result.passed and "refused by name" in result.message

    def unsolved(catalogue, clients):
        raise NotImplementedError

    result = exercises.check_group_by_site(unsolved, CATALOGUE)
    assert not result.passed and "Not solved yet" in result.message and "07_group_by_site.py" in result.message

    def site_of(catalogue, client):
        return next(site for site, held in catalogue.items() if client in held)

    def every_site(catalogue, clients):  # Sites without clients get an empty list.
        groups = {site: [] for site in catalogue}
        for client in clients:
            groups[site_of(catalogue, client)].append(client)
        return groups

    def sorted_ids(catalogue, clients):  # Each site's clients in sorted order.
        return {site: sorted(ids) for site, ids in solution(catalogue, clients).items()}

    def deduplicated(catalogue, clients):  # A client named twice trains once.
        return solution(catalogue, list(dict.fromkeys(clients)))

    def drops_strangers(catalogue, clients):  # A client no site holds is skipped quietly.
        known = {c for held in catalogue.values() for c in held}
        return solution(catalogue, [c for c in clients if c in known])

    def first_site_for_strangers(catalogue, clients):
        groups = {}
        for client in clients:
            site = next((s for s, held in catalogue.items() if client in held), next(iter(catalogue)))
            groups.setdefault(site, []).append(client)
        return groups

    def anonymous_error(catalogue, clients):  # Refuses, without saying which client.
        try:
            return solution(catalogue, clients)
        except LookupError:
            raise LookupError("unknown client") from None

    def by_position(catalogue, clients):  # Contiguous slices in site order, as TFF's own context cuts.
        groups, start = {}, 0
        for site, held in catalogue.items():
            share = clients[start:start + len([c for c in clients if c in held])]
            if share:
                groups[site] = share
            start += len(share)
        return groups

    def sorts_the_catalogue(catalogue, clients):  # Right groups, but the notebook's catalogue is changed.
        for held in catalogue.values():
            held.sort(reverse=True)
        return solution(catalogue, clients)

    def names_the_whole_round(catalogue, clients):
        known = {c for held in catalogue.values() for c in held}
        if any(c not in known for c in clients):
            raise LookupError(f"unknown client in {clients}")
        return solution(catalogue, clients)

    def by_id_range(catalogue, clients):  # A client belongs to the site whose first and last ids enclose it.
        groups = {}
        for client in clients:
            site = next((s for s, held in catalogue.items() if min(held) <= client <= max(held)), None)
            if site is None:
                raise LookupError(f"Client {client!r} is in no site's catalogue.")
            groups.setdefault(site, []).append(client)
        return groups

    def value_error(catalogue, clients):
        try:
            return solution(catalogue, clients)
        except LookupError as e:
            raise ValueError(str(e)) from None

    def substring(catalogue, clients):  # `c in " ".join(held)`: takes h1 for h11, 1 for h1 (a cold read's).
        groups = {}
        for client in clients:
            site = next((s for s, held in catalogue.items() if client in " ".join(held)), None)
            if site is None:
                raise LookupError(f"Client {client!r} is in no site's catalogue.")
            groups.setdefault(site, []).append(client)
        return groups

    def pops(catalogue, clients):  # Right groups, but the caller's round is emptied (clients.pop(0)).
        groups = {}
        while clients:
            client = clients.pop(0)
            groups.setdefault(site_of(catalogue, client), []).append(client)
        return groups

    def normalises(catalogue, clients):  # Ids compared after strip().lower(): " H1" is taken for h1.
        site_of_id = {client.strip().lower(): site for site, held in catalogue.items() for client in held}
        groups = {}
        for client in clients:
            if client.strip().lower() not in site_of_id:
                raise LookupError(f"Client {client!r} is in no site's catalogue.")
            groups.setdefault(site_of_id[client.strip().lower()], []).append(client)
        return groups

    wrong = {
        every_site: "an empty list",
        sorted_ids: "in another order than the round's",
        deduplicated: "each client of the round goes to its site, once",
        drops_strangers: "instead of raising LookupError",
        first_site_for_strangers: "instead of raising LookupError",
        anonymous_error: "name that client ('f9999_99'), and only it",
        sorts_the_catalogue: "It changed the catalogue it was given",
        names_the_whole_round: "name that client ('f9999_99'), and only it",
        by_id_range: "instead of raising LookupError",
        by_position: "which does not hold it",
        value_error: "raise LookupError (KeyError is one)",
        substring: "instead of raising LookupError",
        pops: "it changed the round's list of clients it was given",
        normalises: "instead of raising LookupError",
        lambda catalogue, clients: list(clients): "return a dict",
    }
    for answer, hint in wrong.items():
        result = exercises.check_group_by_site(answer, CATALOGUE)
        assert not result.passed and hint in result.message, (answer, result.message)

    with pytest.raises(ValueError, match="at least two sites holding two clients"):
        exercises.check_group_by_site(solution, {"only": ["a", "b"]})
    before = {site: list(ids) for site, ids in CATALOGUE.items()}
    exercises.check_group_by_site(sorts_the_catalogue, CATALOGUE)
    assert CATALOGUE == before  # The caller's catalogue is never the one the answer gets.


@pytest.fixture(scope="module")
def gatekeeper_folder(tmp_path_factory):
    """A site's gatekeeper folder with notebook 08's training approved, and a computation not on it."""
    from tutorial_helpers import model, sites
    from tutorial_helpers.sites import gatekeeper

    folder = tmp_path_factory.mktemp("gatekeeper")
    approved = sites.build_site_fed_avg().next
    gatekeeper.approve(folder, {"notebook 08's training": approved})
    changed = tff.simulation.compose_dataset_computation_with_learning_process(
        sites.site_dataset_computation(lambda d: data.preprocess(d).take(5)), model.build_fed_avg()).next
    return folder, approved, changed


def test_would_run_passes_the_solution_and_refuses_each_wrong_answer(gatekeeper_folder):
    import functools

    from tutorial_helpers.sites.gatekeeper import APPROVALS, fingerprint, read_approvals, site_part

    folder, approved, changed = gatekeeper_folder
    before = (folder / APPROVALS).read_text()
    solution = run_solution("08_would_run.py", fingerprint=fingerprint, read_approvals=read_approvals,
                            site_part=site_part)["would_run"]
    result = exercises.check_would_run(solution, folder, approved, changed)
    assert result.passed and "as the gatekeeper does" in result.message
    assert (folder / APPROVALS).read_text() == before  # The check works on a copy.

    def unsolved(folder, computation):
        raise NotImplementedError

    result = exercises.check_would_run(unsolved, folder, approved, changed)
    assert not result.passed and "Not solved yet" in result.message and "08_would_run.py" in result.message

    sent = functools.cache(lambda computation: fingerprint(site_part(computation)))  # Compiles once each.
    cached = {}

    def remembers_the_first_list(folder, computation):
        approvals = cached.setdefault("list", read_approvals(folder))
        return sent(computation) in approvals

    wrong = {
        lambda folder, c: fingerprint(c) in read_approvals(folder): "not the whole computation",
        lambda folder, c: sent(c) in (folder / APPROVALS).read_text(): "A line that starts with # is a comment",
        remembers_the_first_list: "read it at every call",
        lambda folder, c: "notebook 08's training" in read_approvals(folder).values(): "Compare fingerprints",
        lambda folder, c: True: "Its fingerprint is not on the list",
        lambda folder, c: False: "fingerprint(site_part(...))",
        lambda folder, c: "yes" if sent(c) in read_approvals(folder) else "": "return True or False",
        lambda folder, c: read_approvals(folder)[sent(c)] is not None: "it raised KeyError",
        lambda folder, c: any(f[:12] == sent(c)[:12] for f in read_approvals(folder)): "Compare whole fingerprints",
        lambda folder, c: any(sent(c).startswith(f[:32]) for f in read_approvals(folder)): "a prefix can be matched",
        lambda folder, c: any(sent(c) in line for line in (folder / APPROVALS).read_text().splitlines()
                              if not line.startswith("#")): "the first word of each line",
        lambda folder, c: sent(c) in {line.split()[0] for line in open(folder / APPROVALS)
                                      if line.strip() and not line.startswith("#")}: "it raised FileNotFoundError",
    }
    for answer, hint in wrong.items():
        result = exercises.check_would_run(answer, folder, approved, changed)
        assert not result.passed and hint in result.message, (hint, result.message)
    assert (folder / APPROVALS).read_text() == before

    with pytest.raises(ValueError, match="needs `approved` to be on the list"):
        exercises.check_would_run(solution, folder, changed, approved)


def test_rounds_within_passes_the_solution_and_refuses_each_wrong_answer():
    from tutorial_helpers.sites.gatekeeper.release import epsilon_spent

    solution = run_solution("09_rounds_within.py", epsilon_spent=epsilon_spent)["rounds_within"]
    result = exercises.check_rounds_within(solution)
    assert result.passed and "as the site's gatekeeper does" in result.message

    def unsolved(budget, noise_multiplier, delta):
        raise NotImplementedError

    result = exercises.check_rounds_within(unsolved)
    assert not result.passed and "Not solved yet" in result.message and "09_rounds_within.py" in result.message

    def first_past(budget, z, delta):  # One too many: the round that goes past the budget.
        return solution(budget, z, delta) + 1

    def strictly_below(budget, z, delta):
        n = 0
        while epsilon_spent([z] * (n + 1), delta) < budget:
            n += 1
        return n

    wrong = {
        first_past: "Count the rounds whose epsilon",
        lambda budget, z, delta: solution(budget, 1.0, delta): "use noise_multiplier in every round",
        lambda budget, z, delta: solution(budget, z, 1e-5): "pass the case's delta",
        strictly_below: "exactly to the budget is still allowed",
        lambda budget, z, delta: max(1, solution(budget, z, delta)): "the answer is 0",
        lambda budget, z, delta: float(solution(budget, z, delta)): "return a whole number of rounds",
        lambda budget, z, delta: int(budget / epsilon_spent([z], delta)): "Count the rounds whose epsilon",
    }
    for answer, hint in wrong.items():
        result = exercises.check_rounds_within(answer)
        assert not result.passed and hint in result.message, (hint, result.message)


def test_client_rows_passes_the_solution_and_refuses_each_wrong_answer():
    solution = run_solution("10_client_rows.py")["client_rows"]
    result = exercises.check_client_rows(solution)
    assert result.passed and "One query per client" in result.message

    def unsolved(connection, client_id):
        raise NotImplementedError

    result = exercises.check_client_rows(unsolved)
    assert not result.passed and "Not solved yet" in result.message and "10_client_rows.py" in result.message
    columns = ('"Culmen Length (mm)", "Culmen Depth (mm)", "Flipper Length (mm)", "Body Mass (g)", "Species"')

    def formatted(connection, client_id):  # The id pasted into the SQL.
        return connection.execute(f"SELECT {columns} FROM penguins WHERE nest = '{client_id}'").fetchall()

    def whole_table(connection, client_id):  # Right rows, but every client's rows read.
        return [row[:5] for row in connection.execute(f"SELECT {columns}, nest FROM penguins") if row[5] == client_id]

    def star(connection, client_id):
        return connection.execute("SELECT * FROM penguins WHERE nest = ?", (client_id,)).fetchall()

    def first_only(connection, client_id):
        row = connection.execute(f"SELECT {columns} FROM penguins WHERE nest = ?", (client_id,)).fetchone()
        return [row] if row else []

    def prefix(connection, client_id):  # Biscoe_N1 also finds Biscoe_N11, Biscoe_N12, ...
        return connection.execute(f"SELECT {columns} FROM penguins WHERE nest LIKE ?", (client_id + "%",)).fetchall()

    def header_skipped(connection, client_id):  # Off by one: the first row dropped, as if it were a CSV header.
        return solution(connection, client_id)[1:]

    def pasted_then_run_again(connection, client_id):  # The id pasted into the first of two statements.
        connection.execute(f"SELECT count(*) FROM penguins WHERE nest = '{client_id}'")
        return solution(connection, client_id)

    def without_species(connection, client_id):
        return [row[:4] for row in solution(connection, client_id)]

    def raises_for_unknown(connection, client_id):
        rows = solution(connection, client_id)
        if not rows:
            raise KeyError(client_id)
        return rows

    def as_lists(connection, client_id):
        return [list(row) for row in solution(connection, client_id)]

    def quoted_repr(connection, client_id):  # The id pasted in with Python's quotes.
        return connection.execute(f"SELECT {columns} FROM penguins WHERE nest = {client_id!r}").fetchall()

    def escaped(connection, client_id):  # Quotes doubled by hand: still the id in the SQL text.
        quoted = client_id.replace("'", "''")
        return connection.execute(f"SELECT {columns} FROM penguins WHERE nest = '{quoted}'").fetchall()

    def where_anything(connection, client_id):  # A WHERE that keeps every row, then a filter in Python.
        rows = connection.execute(f"SELECT {columns}, nest FROM penguins WHERE nest IS NOT NULL").fetchall()
        return [row[:5] for row in rows if row[5] == client_id]

    def no_query(connection, client_id):
        return []

    wrong = {
        formatted: "Pass it as a parameter",
        quoted_repr: "Pass it as a parameter",
        escaped: "Pass it as a parameter",
        whole_table: "read the whole table",
        where_anything: "read the whole table",
        no_query: "not the nest's",
        star: "select the four measurements",
        first_only: "fetch every row",
        header_skipped: "not the nest's",
        prefix: "Compare the nest exactly",
        without_species: "its rows have 4 values",
        raises_for_unknown: "it raised KeyError",
        as_lists: "return a list of tuples",
    }
    for answer, hint in wrong.items():
        result = exercises.check_client_rows(answer)
        assert not result.passed and hint in result.message, (hint, result.message)
    result = exercises.check_client_rows(pasted_then_run_again)  # The message quotes the statement at fault.
    assert not result.passed and "(\"SELECT count(*) FROM penguins WHERE nest = 'Biscoe_N1'\")" in result.message, \
        result.message

    def commented(connection, client_id):  # Right answers in other shapes pass too.
        query = f"-- one nest\nSELECT {columns} FROM penguins WHERE(nest = ?);"
        return connection.execute(query, (client_id,)).fetchall()

    def with_cte(connection, client_id):
        return connection.execute(f"WITH mine AS (SELECT * FROM penguins WHERE nest = :id) SELECT {columns} FROM mine",
                                  {"id": client_id}).fetchall()

    def through_a_cursor(connection, client_id):
        cursor = connection.cursor()
        cursor.execute(f"SELECT {columns} FROM penguins WHERE nest = ?", [client_id])
        return [tuple(row) for row in cursor]

    for answer in (commented, with_cte, through_a_cursor):
        result = exercises.check_client_rows(answer)
        assert result.passed, (answer.__name__, result.message)
