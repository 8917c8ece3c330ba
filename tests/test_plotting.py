"""Tests of plot_training_curves."""

import collections

import matplotlib
import pytest

from tutorial_helpers.plotting import plot_training_curves

matplotlib.use("Agg")


def tff_round_metrics(accuracy, loss):
    """The structure `process.next(...).metrics` has in TFF 0.87's FedAvg."""
    return collections.OrderedDict(
        distributor=(),
        client_work=collections.OrderedDict(
            train=collections.OrderedDict(
                sparse_categorical_accuracy=accuracy, loss=loss, num_examples=1440, num_batches=1440
            )
        ),
        aggregator=collections.OrderedDict(mean_value=(), mean_weight=()),
        finalizer=collections.OrderedDict(update_non_finite=0),
    )


HISTORY = [tff_round_metrics(0.14, 9.55), tff_round_metrics(0.38, 4.68), tff_round_metrics(0.57, 2.75)]


def test_draws_accuracy_and_loss_per_round():
    fig = plot_training_curves(HISTORY, title="EMNIST")
    ax_accuracy, ax_loss = fig.axes
    (accuracy_line,) = ax_accuracy.get_lines()
    (loss_line,) = ax_loss.get_lines()
    assert list(accuracy_line.get_xdata()) == [1, 2, 3]
    assert list(accuracy_line.get_ydata()) == pytest.approx([0.14, 0.38, 0.57])
    assert list(loss_line.get_ydata()) == pytest.approx([9.55, 4.68, 2.75])
    assert ax_accuracy.get_ylabel() == "training accuracy"
    assert ax_loss.get_ylabel() == "training loss"
    assert fig._suptitle.get_text() == "EMNIST"


def test_saves_the_figure_creating_the_directory(tmp_path):
    target = tmp_path / "figures" / "curves.png"
    plot_training_curves(HISTORY, save_to=target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_accepts_flat_metrics_with_an_accuracy_key():
    fig = plot_training_curves([{"accuracy": 0.5, "loss": 1.0}, {"accuracy": 0.75, "loss": 0.5}])
    assert list(fig.axes[0].get_lines()[0].get_ydata()) == [0.5, 0.75]


def test_bad_history_gets_errors_that_say_what_is_wrong():
    with pytest.raises(ValueError, match="history is empty"):
        plot_training_curves([])
    with pytest.raises(ValueError, match=r"Round 2 has no accuracy and loss metrics.*found \['loss'\]"):
        plot_training_curves([{"accuracy": 0.5, "loss": 1.0}, {"loss": 1.0}])
    with pytest.raises(TypeError, match=r"history\[0\] is a float"):
        plot_training_curves([0.5])


def test_label_distributions_draw_the_given_writers_and_a_histogram(tmp_path):
    import numpy as np
    from matplotlib.figure import Figure

    from tutorial_helpers.plotting import plot_label_distributions

    counts = {"a": np.array([5, 5, 0]), "b": np.array([0, 2, 8]), "c": np.array([0, 0, 1])}
    target = tmp_path / "figures" / "labels.png"
    fig = plot_label_distributions(
        counts, {"typical": ["a", "b"], "tiny": ["c"]}, distance={"a": 0.1, "b": 0.5, "c": 0.9},
        min_digits=5, title="Labels", save_to=target,
    )
    assert isinstance(fig, Figure)
    *panels, ax_sizes = fig.axes
    assert len(panels) == 3
    assert [p.patches[i].get_height() for p, i in ((panels[0], 0), (panels[1], 2))] == [0.5, 0.8]
    assert panels[2].get_title() == "c: 1 digit, distance 0.90"
    assert panels[0].get_ylabel() == "typical\nshare of digits"
    # The line is everyone's shares: 5/21, 7/21, 9/21.
    assert list(panels[0].get_lines()[0].get_ydata()) == pytest.approx([5 / 21, 7 / 21, 9 / 21])
    assert sum(p.get_height() for p in ax_sizes.patches) == 3
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_label_distributions_say_what_is_missing():
    import numpy as np

    from tutorial_helpers.plotting import plot_label_distributions

    with pytest.raises(ValueError, match="counts is empty"):
        plot_label_distributions({}, {"row": ["a"]})
    with pytest.raises(ValueError, match=r"does not have: \['z'\]"):
        plot_label_distributions({"a": np.array([1, 2])}, {"row": ["a", "z"]})
    with pytest.raises(ValueError, match="empty row"):
        plot_label_distributions({"a": np.array([1, 2])}, {"row": []})
