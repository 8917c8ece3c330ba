"""The tolerance checks that replace digit-by-digit comparison of training metrics."""

import numpy as np
import pytest

from tutorial_helpers import expected_results as er

# 10 rounds of the seed's FedAvg measured under other settings than the
# reference (benchmarks/numeric_drift.py; see tutorial_helpers/expected_results.py).
MEASURED = {
    "oneDNN (TF_ENABLE_ONEDNN_OPTS=1)": (
        [0.1385, 0.3906, 0.5569, 0.6701, 0.7212, 0.7267, 0.7792, 0.7976, 0.8198, 0.8309],
        [9.552, 4.579, 2.829, 2.063, 1.687, 1.619, 1.229, 1.147, 1.024, 0.954],
    ),
    "oneDNN limited to AVX": (
        [0.1389, 0.3708, 0.5736, 0.6660, 0.7222, 0.7465, 0.7625, 0.7858, 0.8142, 0.8306],
        [9.552, 4.681, 2.748, 2.141, 1.741, 1.472, 1.389, 1.197, 1.034, 0.961],
    ),
    "stored by an earlier machine (oneDNN, AVX-512)": (
        [0.139, 0.380, 0.572, 0.659, 0.719, 0.756, 0.779, 0.782, 0.799, 0.827],
        [9.55, 4.68, 2.75, 2.16, 1.72, 1.39, 1.28, 1.18, 1.06, 0.96],
    ),
}


def history(accuracies, losses, examples=2880):
    """Rounds shaped as `result.metrics` of TFF's FedAvg."""
    return [
        {"client_work": {"train": {"sparse_categorical_accuracy": a, "loss": loss,
                                   "num_examples": examples}}}
        for a, loss in zip(accuracies, losses, strict=True)
    ]


def test_the_reference_run_is_on_track(capsys):
    er.check_seed_training(history(er.REFERENCE_ACCURACY, er.REFERENCE_LOSS))
    assert "on track: 10 rounds" in capsys.readouterr().out


@pytest.mark.parametrize("setting", MEASURED)
def test_runs_under_other_kernels_are_on_track(setting):
    er.check_seed_training(history(*MEASURED[setting]))


def test_a_prefix_of_rounds_and_the_train_part_alone_are_accepted():
    train_only = [h["client_work"]["train"] for h in history(*MEASURED["oneDNN limited to AVX"])]
    er.check_seed_training(train_only[:3])


def test_a_state_not_carried_between_rounds_fails():
    """Every round starting from the initial model: round 1's figures again and again."""
    stuck = history([er.REFERENCE_ACCURACY[0]] * 5, [er.REFERENCE_LOSS[0]] * 5)
    with pytest.raises(AssertionError, match=r"round 2: accuracy 0\.1441, expected 0\.3882"):
        er.check_seed_training(stuck)


def test_other_data_fails():
    with pytest.raises(AssertionError, match="round 1: 2400 examples, expected 2880"):
        er.check_seed_training(history(er.REFERENCE_ACCURACY[:1], er.REFERENCE_LOSS[:1], 2400))


def test_a_loss_that_rises_fails():
    losses = list(er.REFERENCE_LOSS)
    losses[4] = losses[3] * 1.1  # Still within 20 % of the reference, but rising.
    with pytest.raises(AssertionError, match=r"the loss rose in round\(s\) 5"):
        er.check_seed_training(history(er.REFERENCE_ACCURACY, losses))


def test_more_rounds_than_the_reference_is_a_clear_error():
    with pytest.raises(ValueError, match="the reference has 10 rounds"):
        er.check_seed_training(history([0.5] * 11, [1.0] * 11))


def test_evaluation_within_and_outside_tolerance(capsys):
    reference = {name: expected for name, (expected, _) in er.REFERENCE_EVALUATION.items()}
    er.check_evaluation(reference)
    assert "on track" in capsys.readouterr().out
    untrained = {name: 0.1 for name in reference}
    with pytest.raises(AssertionError, match="writers never trained on: accuracy 0.100"):
        er.check_evaluation(untrained)


def test_one_and_two_workers_must_agree_to_rounding_after_round_1():
    weights = [np.zeros((784, 10), np.float32), np.zeros(10, np.float32)]
    nudged = [w + 1e-7 for w in weights]
    metrics = history(er.REFERENCE_ACCURACY[:2], er.REFERENCE_LOSS[:2])
    er.check_workers_agree(metrics, metrics, [weights, weights], [nudged, nudged])
    apart = [w + 1e-3 for w in weights]
    with pytest.raises(AssertionError, match="after round 1 the models differ by 1.0e-03"):
        er.check_workers_agree(metrics, metrics, [weights, weights], [apart, apart])
    other = history([er.REFERENCE_ACCURACY[0], 0.30], er.REFERENCE_LOSS[:2])
    with pytest.raises(AssertionError, match="round 2: accuracies differ"):
        er.check_workers_agree(metrics, other, [weights, weights], [nudged, nudged])
