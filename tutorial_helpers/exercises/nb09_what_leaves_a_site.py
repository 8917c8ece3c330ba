"""Notebook 09's exercise: how many rounds does a site's privacy budget allow?"""

from __future__ import annotations

import numbers

from tutorial_helpers.exercises.common import CheckResult, not_yet, verdict

# Each case: (budget epsilon, noise multiplier, delta); the answers come from the gatekeeper's own accounting.
CASES = {
    "workshop": (10.0, 1.0, 1e-5),
    "more_noise": (10.0, 2.0, 1e-5),
    "smaller_delta": (10.0, 1.0, 1e-9),
    "exactly_three": None,  # A budget equal to three rounds' epsilon: three rounds fit, not two.
    "too_small": (0.5, 1.0, 1e-5),
}
CASE_TEXTS = {
    "workshop": "a budget of 10 at noise multiplier 1 and delta 1e-5",
    "more_noise": "a budget of 10 at noise multiplier 2 and delta 1e-5",
    "smaller_delta": "a budget of 10 at noise multiplier 1 and delta 1e-9",
    "exactly_three": "a budget exactly equal to three rounds at noise multiplier 1.5 and delta 1e-5",
    "too_small": "a budget of 0.5 at noise multiplier 1 and delta 1e-5",
}
HINTS = {
    "workshop": "Count the rounds whose epsilon, all of them together, stays within the budget.",
    "more_noise": "More noise spends less per round: use noise_multiplier in every round you count.",
    "smaller_delta": "Epsilon depends on delta: pass the case's delta to epsilon_spent.",
    "exactly_three": "A round that brings epsilon exactly to the budget is still allowed (the gatekeeper refuses "
                     "only what goes past it).",
    "too_small": "If even one round goes past the budget, the answer is 0.",
}


def _allowed(budget: float, multiplier: float, delta: float) -> int:
    from tutorial_helpers.sites.gatekeeper.release import epsilon_spent

    rounds = 0
    while epsilon_spent([multiplier] * (rounds + 1), delta) <= budget:
        rounds += 1
    return rounds


def check_rounds_within(rounds_within) -> CheckResult:
    """Exercise 09: `rounds_within(budget, noise_multiplier, delta)`, the rounds a site's budget lets leave.

    The answer must be the number the site's gatekeeper would answer before
    it refuses (`gatekeeper.release.PrivacyBudget`): the largest n for which
    n rounds at `noise_multiplier` spend at most `budget` at `delta`.
    """
    from tutorial_helpers.sites.gatekeeper.release import epsilon_spent

    problems = []
    for key, case in CASES.items():
        if case is None:
            case = (epsilon_spent([1.5] * 3, 1e-5), 1.5, 1e-5)
        expected = _allowed(*case)
        try:
            got = rounds_within(*case)
        except NotImplementedError:
            return not_yet("rounds_within still raises NotImplementedError.", "09_rounds_within.py")
        except Exception as e:  # the learner's code may raise anything
            problems.append(f"For {CASE_TEXTS[key]} it raised {type(e).__name__}: {e}.")
            continue
        if isinstance(got, bool) or not isinstance(got, numbers.Integral):
            problems.append(f"For {CASE_TEXTS[key]} it returned {got!r}: return a whole number of rounds.")
        elif got != expected:
            problems.append(f"For {CASE_TEXTS[key]} it returned {got}, not {expected}. {HINTS[key]}")
    return verdict(problems, "It counts rounds as the site's gatekeeper does. Remember what the count assumes: "
                             "every round counted against every client, no sampling.")
