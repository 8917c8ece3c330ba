"""The exercise checks accept the solutions and refuse the unsolved and wrong answers."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tutorial_helpers import data, exercises, model, remote_data
from tutorial_helpers.backends import ClientDataBackend

SOLUTIONS = Path(__file__).resolve().parent.parent / "notebooks" / "solutions"
DATASET_TYPE = model.DATASET_TYPE


def run_solution(name, **notebook_names):
    """Runs a solution file in a namespace holding the notebook's names, as %load would."""
    namespace = dict(notebook_names)
    exec(compile((SOLUTIONS / name).read_text(), name, "exec"), namespace)  # noqa: S102
    return namespace


class Unsolved(remote_data.DataBackend):
    async def materialize(self, data, type_spec):
        raise NotImplementedError


def test_even_clients(emnist, capsys):
    train, _ = emnist
    namespace = run_solution(
        "02_even_clients.py", remote_data=remote_data, preprocess=data.preprocess, emnist_train=train
    )
    exercises.check_even_clients_backend(namespace["even_backend"], train, DATASET_TYPE)
    assert "Correct!" in capsys.readouterr().out

    exercises.check_even_clients_backend(Unsolved(), train, DATASET_TYPE)
    assert "Not solved yet" in capsys.readouterr().out

    # Serving every client is wrong: odd ones must be refused.
    exercises.check_even_clients_backend(ClientDataBackend(train), train, DATASET_TYPE)
    assert "uri://1 should be rejected" in capsys.readouterr().out


def test_label_zero(emnist, capsys):
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
        exercises.check_label_zero_count(namespace["count_label_zero"], DATASET_TYPE, train)
        assert "Correct!" in capsys.readouterr().out
        exercises.check_label_zero_count(unsolved, DATASET_TYPE, train)
        assert "Not solved yet" in capsys.readouterr().out
        exercises.check_label_zero_count(forgot_sum, DATASET_TYPE, train)
        assert "Did you sum over the clients?" in capsys.readouterr().out


@pytest.mark.slow
def test_other_clients(emnist, capsys):
    train, _ = emnist
    process = model.build_fed_avg()
    with remote_data.create_execution_context(ClientDataBackend(train)):
        namespace = run_solution(
            "04_other_clients.py", tff=tff, iterative_process=process, dataset_type=DATASET_TYPE
        )
    history = namespace["other_history"]
    exercises.check_other_clients_history(history, train)
    assert "Correct!" in capsys.readouterr().out
    exercises.check_other_clients_history(None, train)
    assert "Not solved yet" in capsys.readouterr().out
    exercises.check_other_clients_history(history[:2], train)  # Too few rounds.
    assert "should hold 3 rounds" in capsys.readouterr().out


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
def test_the_even_clients_check_fits_the_data_it_is_given(num_clients, capsys):
    small = small_client_data(num_clients)
    namespace = run_solution(
        "02_even_clients.py", remote_data=remote_data, preprocess=data.preprocess, emnist_train=small
    )
    exercises.check_even_clients_backend(namespace["even_backend"], small, DATASET_TYPE)
    assert "Correct!" in capsys.readouterr().out
    exercises.check_even_clients_backend(ClientDataBackend(small), small, DATASET_TYPE)
    out = capsys.readouterr().out
    assert "uri://1 should be rejected" in out and "uri://97" not in out


def fake_history(examples_per_round: int, rounds: int = 3):
    return [
        {"client_work": {"train": {"num_examples": examples_per_round,
                                   "sparse_categorical_accuracy": 0.5}}}
        for _ in range(rounds)
    ]


def test_the_training_check_counts_the_examples_of_the_clients_it_is_given(capsys):
    small = small_client_data(4)  # 1, 2, 3, 1 examples.
    exercises.check_other_clients_history(fake_history(3 * data.NUM_EPOCHS), small, clients=[1, 3])
    assert "Correct! Training accuracy on clients 1, 3:" in capsys.readouterr().out
    exercises.check_other_clients_history(fake_history(6 * data.NUM_EPOCHS), small, clients=range(0, 3))
    assert "Correct! Training accuracy on clients 0-2:" in capsys.readouterr().out
    exercises.check_other_clients_history(fake_history(99), small, clients=range(0, 3))
    assert "clients 0-2 hold 6 x 10 epochs = 60" in capsys.readouterr().out


def test_the_checks_reject_clients_the_data_does_not_have():
    small = small_client_data(4)
    with pytest.raises(ValueError, match=r"clients must name .* index from 0 to 3 .* got \[4, 5, 6\]"):
        exercises.check_other_clients_history(fake_history(0), small, clients=range(3, 7))
    with pytest.raises(ValueError, match=r"num_clients must name at least one client"):
        exercises.check_label_zero_count(lambda handle: 0, DATASET_TYPE, small, num_clients=0)
    with pytest.raises(ValueError, match=r"num_clients .* got \[4\]"):
        exercises.check_label_zero_count(lambda handle: 0, DATASET_TYPE, small, num_clients=5)
