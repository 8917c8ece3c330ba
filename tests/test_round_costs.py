"""How notebooks 05 and 06 print what a round costs (tutorial_helpers.round_costs)."""

import pytest

from tutorial_helpers.round_costs import RoundCost, describe_wait, kib


@pytest.mark.parametrize(("num_bytes", "shown"), [
    (1_145_088, "1,118 KiB"),  # A round of in-memory datasets: whole KiB.
    (1_145_190, "1,118 KiB"),  # A hundred bytes more: the same figure.
    (1_146_000, "1,119 KiB"),  # Most of a KiB more: another one.
    (21_811, "21.3 KiB"),  # Datasets that read the file: one decimal.
    (130, "0.1 KiB"),  # Client ids.
])
def test_kib_shows_whole_kib_from_100_up_and_one_decimal_below(num_bytes, shown):
    assert kib(num_bytes) == shown


def test_bytes_through_the_controller_add_what_came_in_and_what_went_out():
    cost = RoundCost("mode", seconds=[1.0, 1.0], bytes_to_workers=[10, 20], bytes_from_service=[1, 2])
    assert cost.bytes_through_controller == [11, 22]


@pytest.mark.parametrize(("seconds", "words"), [
    (3.3, "at least 32 x the latency: one after another"),
    (0.5, "under 16 x the latency: overlapped"),
    (1.59, "under 16 x the latency: overlapped"),
    (1.7, "about 17 x the latency: partly overlapped"),
    (2.4, "about 24 x the latency: partly overlapped"),
])
def test_describe_wait_counts_latencies(seconds, words):
    assert describe_wait(seconds, 32, 0.1) == words


def test_plot_round_costs_draws_the_medians_of_each_mode_and_refuses_nothing_to_plot(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from tutorial_helpers.plotting import plot_round_costs
    from tutorial_helpers.round_costs import RoundCost

    costs = [RoundCost("memory", [0.3, 0.1, 0.2], [10240, 10240, 10240], [0, 0, 0]),
             RoundCost("HTTP", [1.0, 3.0, 2.0], [10240] * 3, [2048, 4096, 1024])]
    figure = plot_round_costs(costs, save_to=tmp_path / "costs.png")
    time_axis, bytes_axis = figure.axes
    assert [bar.get_width() for bar in time_axis.patches] == [0.2, 2.0]  # Medians, in the modes' order.
    assert [bar.get_width() for bar in bytes_axis.patches] == [10.0, 12.0]  # KiB: 10240/1024, 12288/1024.
    assert [label.get_text() for label in time_axis.get_yticklabels()] == ["memory", "HTTP"]
    assert (tmp_path / "costs.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="costs is empty"):
        plot_round_costs([])
