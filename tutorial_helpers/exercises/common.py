"""What every exercise check shares: its result, its verdicts, and small helpers."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np

__all__ = ["NOT_YET", "CheckResult", "client_indices", "not_right", "not_yet", "report", "run", "same_elements",
           "span", "verdict"]

NOT_YET = "Not solved yet: {hint} (A solution: notebooks/solutions/{solution}.)"


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


def report(message: str, passed: bool = False, problems: tuple[str, ...] = ()) -> CheckResult:
    print(message)
    return CheckResult(passed, problems or (() if passed else (message,)), message)


def verdict(problems: list[str], success: str) -> CheckResult:
    if problems:
        return report("Not right yet:\n  - " + "\n  - ".join(problems), problems=tuple(problems))
    return report(f"Correct! {success}", passed=True)


def not_yet(hint: str, solution: str) -> CheckResult:
    return report(NOT_YET.format(hint=hint, solution=solution))


def not_right(problem: str) -> CheckResult:
    return report(f"Not right yet:\n  - {problem}", problems=(problem,))


def run(coroutine):
    """Runs a coroutine whether or not an event loop is running (Jupyter runs one)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def client_indices(client_data, indices, name: str) -> list[int]:
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


def span(indices: list[int]) -> str:
    """How messages name clients: "5-9" for a run of consecutive indices, else "1, 4, 7"."""
    if len(indices) > 1 and indices == list(range(indices[0], indices[-1] + 1)):
        return f"{indices[0]}-{indices[-1]}"
    return ", ".join(map(str, indices))


def same_elements(dataset, expected) -> bool:
    got, want = list(dataset.as_numpy_iterator()), list(expected.as_numpy_iterator())
    return len(got) == len(want) and all(
        np.array_equal(a["x"], b["x"]) and np.array_equal(a["y"], b["y"]) for a, b in zip(got, want, strict=True)
    )
