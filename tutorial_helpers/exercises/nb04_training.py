"""Notebook 04's exercise: training on other clients, evaluated on held-out ones."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow_federated as tff

from tutorial_helpers import data as kit_data
from tutorial_helpers.exercises.common import CheckResult, client_indices, not_yet, span, verdict
from tutorial_helpers.expected_results import training_metrics


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
                f"{span(clients)} hold {examples} x {kit_data.NUM_EPOCHS} epochs = {expected}."
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
        return [f"The evaluation saw {count} digits; clients {span(eval_clients)} hold {digits}. "
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
                f"model trained in your {len(history)} rounds on clients {span(clients)} gives "
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
    clients = client_indices(client_data, clients, "clients")
    eval_clients = client_indices(client_data, eval_clients, "eval_clients")
    if history is None:
        return not_yet("other_history is still None.", "04_other_clients.py")
    problems = _history_problems(history, client_data, clients, rounds)
    problems += _evaluation_problems(evaluation, client_data, eval_clients)
    if not problems:
        problems = _reproduction_problems(history, evaluation, client_data, clients, eval_clients)
    accuracies = [round(float(m.get("sparse_categorical_accuracy", np.nan)), 3) for m in _train_metrics(history)]
    success = f"Training accuracy on clients {span(clients)} by round: {accuracies}"
    if not problems:
        success += (f"; on clients {span(eval_clients)}, never trained on: "
                    f"{float(evaluation['sparse_categorical_accuracy']):.3f}.")
    return verdict(problems, success)
