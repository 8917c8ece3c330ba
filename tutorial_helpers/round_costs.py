"""What a round of training costs: seconds, and bytes through the controller.

Used by notebooks 05 and 06 and by `benchmarks/remote_data.py`, so that the
figures in the notebooks and the benchmark come from the same code.
"""

from __future__ import annotations

import dataclasses
import time


@dataclasses.dataclass
class RoundCost:
    """One way of feeding a round, measured over several rounds."""

    mode: str
    seconds: list[float] = dataclasses.field(default_factory=list)
    bytes_to_workers: list[int] = dataclasses.field(default_factory=list)
    bytes_from_service: list[int] = dataclasses.field(default_factory=list)

    @property
    def bytes_through_controller(self) -> list[int]:
        """Client data (or references to it) received plus sent, per round."""
        return [a + b for a, b in zip(self.bytes_to_workers, self.bytes_from_service, strict=True)]


def measure_rounds(mode, process, state, client_arg, context, *, rounds=3, backend=None):
    """Runs `rounds` rounds of `process` on `client_arg` in `context`; returns (RoundCost, state).

    `context` is a kit execution context (it counts the bytes of client-placed
    values sent to its workers); `backend`, if it fetches over HTTP, counts the
    bytes it received. The context should already have run one round, so
    that compiling and tracing are not counted.
    """
    cost = RoundCost(mode)
    for _ in range(rounds):
        sent = sum(worker.client_value_bytes for worker in context.workers)
        received = getattr(backend, "bytes_received", 0)
        start = time.perf_counter()
        state = process.next(state, client_arg() if callable(client_arg) else client_arg).state
        cost.seconds.append(time.perf_counter() - start)
        cost.bytes_to_workers.append(
            sum(worker.client_value_bytes for worker in context.workers) - sent
        )
        cost.bytes_from_service.append(getattr(backend, "bytes_received", 0) - received)
    return cost, state


def kib(num_bytes: float) -> str:
    """Bytes as KiB to print: whole KiB from 100 KiB up, one decimal below.

    The bytes of a round's in-memory datasets vary a little from run to run
    (1,118.2 and 1,118.3 KiB in two runs of notebook 05 on one machine): a
    tenth of a KiB of a megabyte is noise, not a figure to compare.
    """
    value = num_bytes / 1024
    return f"{value:,.0f} KiB" if value >= 100 else f"{value:,.1f} KiB"


def describe_wait(seconds: float, count: int, latency: float) -> str:
    """How long `count` requests took, in latencies, in words that read the same on any machine.

    Each request waits `latency` seconds at the service. At least `count`
    latencies means they ran one after another; under half of that, that they
    overlapped (overlapped requests take about one latency, but a busy machine
    can stall for a while: half leaves room for that); anything between is
    reported with its number.
    """
    if seconds >= count * latency:
        return f"at least {count} x the latency: one after another"
    if seconds < count * latency / 2:
        return f"under {count / 2:g} x the latency: overlapped"
    return f"about {seconds / latency:.0f} x the latency: partly overlapped"
