"""What a site lets leave after a round: noise on the update sum, nothing else, and a privacy budget.

Two outgoing filters, for a site whose policy sets ``noise_multiplier``
(`limits.txt`), each a class with one job:

* `SiteNoise` lets a `Compute` answer leave only if it is the result of a
  round that clipped each client's update at the norm the site pins
  (``clipping_norm`` in `pins.txt`, checked by `PinnedValues` on the call).
  It adds Gaussian noise to the round's update sum, of standard deviation
  ``noise_multiplier * clipping_norm`` on every number, and sets every other
  number of the answer (the round's metrics and counts) to zero.
* `PrivacyBudget` counts each answer that leaves in the site's file
  `privacy_spent.txt`, before it leaves, and refuses the answer that would
  take the site's epsilon (at its delta) past its budget, with Google's
  `dp_accounting` (its RDP accountant).

What they bound, and what they do not:

* One client's influence on what leaves the site in one round is its
  clipped update, at most ``clipping_norm`` in L2 norm, whatever model the
  controller sent: the clipping runs inside the approved computation, at the
  site, and its norm is pinned. The noise makes that influence hard to read
  back; the budget adds up over rounds what every answer gives away, as
  (epsilon, delta)-differential privacy for each of the site's clients
  (adding or removing one client's data).
* The accounting assumes nothing of the controller's choice of clients: it
  counts every round as if each client of the site were in it (no
  amplification by sampling, which would need the site to draw the cohort
  itself). Fewer rounds per client would spend less; the site cannot know
  that the controller sampled.
* The noise is floating-point Gaussian noise from the operating system's
  randomness (`random.SystemRandom`), not a discrete Gaussian: the textbook
  guarantee is for real numbers, and floating-point noise has known weak
  spots (Mironov, 2012). A teaching kit's bound, not an audited one.
* Metrics are withheld, not noised: a loss summed over a client's examples
  has no bound the gatekeeper could check, so no noise could cover it. The
  controller evaluates the model on data of its own.
"""

from __future__ import annotations

import math
import os
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from tutorial_helpers.sites.gatekeeper.checks import Call, Refused
from tutorial_helpers.sites.gatekeeper.ledger import Function, ValueLedger
from tutorial_helpers.sites.gatekeeper.policy import CLIPPING_NORM, LIMITS_FILE, PINS, Policy

__all__ = ["SPENT_FILE", "UPDATE", "PrivacyBudget", "SiteNoise", "epsilon_spent", "read_spent"]

# Where, in a round's parameter, the model's trainable weights are: the update sum has their type.
UPDATE = ("global_model_weights", "trainable")
# The site's record of what it has released under noise: one line per answer.
SPENT_FILE = "privacy_spent.txt"
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64}  # TFF's DataType: numpy's.
_FLOATS = {1, 2}


def _nodes(type_proto, names=(), position=()) -> Iterator[tuple[tuple, tuple, object]]:
    """Every part of a Type proto: (its name path, its position, its Type proto), outermost first."""
    yield names, position, type_proto
    kind = type_proto.WhichOneof("type")
    if kind == "struct":
        for i, element in enumerate(type_proto.struct.element):
            yield from _nodes(element.value, names + ((element.name,) if element.name else ()), position + (i,))
    elif kind == "federated":
        yield from _nodes(type_proto.federated.member, names, position + ("*",))


def _arrays_at(value, position) -> list:
    """The Value protos at `position` of `value` ("*": every member of a federated value)."""
    values = [value]
    for step in position:
        if step == "*":
            values = [member for v in values for member in v.federated.value]
        else:
            values = [v.struct.element[step].value for v in values]
    return values


def _replace_numbers(array, change: Callable[[np.ndarray], np.ndarray]) -> None:
    """Replaces the numbers of a TFF Array proto, in place, by `change(numbers)`, keeping its type and form."""
    dtype = _DTYPES.get(array.dtype)
    if dtype is None:
        raise ValueError(f"an array of type {array.dtype}")
    kind = array.WhichOneof("kind")
    if kind is not None:  # A scalar, as a typed list.
        values = np.asarray(getattr(array, kind).value, dtype=dtype)
        getattr(array, kind).value[:] = change(values).astype(dtype).tolist()
    else:
        values = np.frombuffer(array.content, dtype=np.dtype(dtype).newbyteorder("<"))
        array.content = change(values).astype(np.dtype(dtype).newbyteorder("<")).tobytes()


class SiteNoise:
    """Noises a round's update sum and withholds the rest, for a site whose policy sets ``noise_multiplier``.

    Without that limit it lets every answer through unchanged. With it,
    each `Compute` answer must be the result of a call (`ValueLedger.called`)
    of a computation whose parameter holds ``clipping_norm``, checked by
    `PinnedValues` in that very call and still the site's pin, and whose result
    holds exactly one part of the type of the parameter's
    ``global_model_weights.trainable``: the update sum. Anything else is
    refused, evaluation included. The update's numbers get Gaussian noise of
    standard deviation ``noise_multiplier * clipping_norm``; every other
    number in the answer is set to zero. Notes what it did for the log.
    """

    def __init__(self, policy: Policy, ledger: ValueLedger):
        self.policy = policy
        self.ledger = ledger
        # normalvariate, not gauss: gauss keeps a draw between calls, which two threads could both use.
        self.randomness = random.SystemRandom()

    def filter(self, call: Call, answer: bytes) -> bytes:
        multiplier = self.policy.limits.get("noise_multiplier")
        if call.method != "Compute" or multiplier is None:
            return answer
        from tensorflow_federated.proto.v0 import executor_pb2

        request = call.parsed
        function = self.ledger.called(request.executor.id, request.value_ref.id)
        if function is None:
            raise Refused(f"Site {call.site!r} refused to send back a result that is not a round's: with noise "
                          f"({LIMITS_FILE}: noise_multiplier), it sends back only rounds that clip each client's "
                          f"update at its pinned {CLIPPING_NORM}.")
        norm = self._clipping_norm(call, function)
        update = self._update_position(call, function)
        response = executor_pb2.ComputeResponse.FromString(answer)
        std = multiplier * norm
        noised = withheld = 0
        for _, position, type_proto in _nodes(function.result):
            if type_proto.WhichOneof("type") != "tensor":
                continue
            inside = position[:len(update)] == update
            for value in _arrays_at(response.value, position):
                if inside:
                    if value.array.dtype not in _FLOATS:
                        raise Refused(f"Site {call.site!r} refused a round whose update holds whole numbers: it "
                                      "can add noise only to floating-point numbers.")
                    _replace_numbers(value.array, self._noise(std))
                    noised += 1
                else:
                    _replace_numbers(value.array, np.zeros_like)
                    withheld += 1
        call.noise_multiplier = multiplier
        call.notes.append(f"noised {noised} update arrays (std {std:.6g} = {multiplier:g} x {CLIPPING_NORM} "
                          f"{norm:g}), withheld {withheld} metric and count arrays")
        return response.SerializeToString()

    def _noise(self, std: float) -> Callable[[np.ndarray], np.ndarray]:
        def add(values: np.ndarray) -> np.ndarray:
            draws = np.fromiter((self.randomness.normalvariate(0.0, std) for _ in range(values.size)), float,
                                values.size)
            return values + draws.reshape(values.shape)

        return add

    def _clipping_norm(self, call: Call, function: Function) -> float:
        """The clipping norm checked in the round's own call, which must still be the site's pin."""
        checked = {name: number for name, number in function.checked.items() if name.split(".")[-1] == CLIPPING_NORM}
        pinned = {name: number for name, number in self.policy.pins.items() if name.split(".")[-1] == CLIPPING_NORM}
        if len(set(checked.values())) != 1:
            raise Refused(f"Site {call.site!r} refused to send back a round whose clipping norm it did not check: "
                          f"with noise, each client's update must be clipped at a norm the site pins "
                          f"({PINS}: {CLIPPING_NORM} = NUMBER) in a computation whose parameter holds it, pinned "
                          "when the round was called.")
        norm = next(iter(checked.values()))
        if set(pinned.values()) != {norm}:
            raise Refused(f"Site {call.site!r} refused to send back a round clipped at {norm:g}: its pinned "
                          f"{CLIPPING_NORM} is now {sorted(pinned.values()) or 'none'} ({PINS}).")
        return norm

    def _update_position(self, call: Call, function: Function) -> tuple:
        named = [(position, type_proto) for names, position, type_proto in _nodes(function.parameter)
                 if names[-len(UPDATE):] == UPDATE]  # The part so named, then its unnamed insides: keep the part.
        weights = [type_proto for position, type_proto in named
                   if not any(position[:len(other)] == other and position != other for other, _ in named)]
        found = [position for _, position, type_proto in _nodes(function.result)
                 if weights and type_proto == weights[0]]
        if len(weights) != 1 or len(found) != 1:
            raise Refused(f"Site {call.site!r} refused to send back a result in which it cannot tell the update "
                          f"sum: it needs one {'.'.join(UPDATE)} in the round's parameter ({len(weights)} found) "
                          f"and one part of that type in its result ({len(found)} found).")
        return found[0]


def read_spent(folder: str | os.PathLike) -> list[float]:
    """The noise multipliers of the answers the site has released under noise, one per answer, oldest first."""
    path = Path(folder) / SPENT_FILE
    spent = []
    for number, line in enumerate(path.read_text().splitlines() if path.exists() else [], 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        name, _, value = text.partition("=")
        try:
            if name.strip() != "noise_multiplier" or not float(value) > 0:
                raise ValueError
        except ValueError:
            raise ValueError(f"{path}, line {number}: {line!r} is not noise_multiplier = NUMBER. The site's "
                             "record of what it released is written by its gatekeeper; restore it from a copy, "
                             "as a missing line would let the budget be spent again.") from None
        spent.append(float(value))
    return spent


def epsilon_spent(multipliers: list[float], delta: float) -> float:
    """The epsilon, at `delta`, of releasing one Gaussian sum per noise multiplier in `multipliers`.

    Each release is a Gaussian mechanism on a sum in which each client's
    part has L2 norm at most the clipping norm, with noise of that norm
    times its multiplier; they compose, with no amplification by sampling
    (RDP accountant of `dp_accounting`). 0 for no release.
    """
    if not multipliers:
        return 0.0
    import dp_accounting

    accountant = dp_accounting.rdp.RdpAccountant()
    for multiplier in multipliers:
        accountant.compose(dp_accounting.GaussianDpEvent(multiplier))
    return float(accountant.get_epsilon(delta))


class PrivacyBudget:
    """Refuses the answer that would take the site past its privacy budget; records each one that leaves.

    With ``epsilon`` and ``delta`` in the site's limits (and
    ``noise_multiplier``, which they need), each `Compute` answer (every one
    that `SiteNoise`, before it, let through) spends one Gaussian release at
    the current noise multiplier. If the epsilon of every release so far
    and this one (`epsilon_spent`) is over the budget, the answer is
    refused; otherwise a line is appended to `privacy_spent.txt` and written
    to disk before the answer leaves, so a gatekeeper stopped at any moment
    has counted at least what left. Without a budget it lets everything
    through and records nothing.
    """

    def __init__(self, policy: Policy):
        self.policy = policy
        self.path = policy.folder / SPENT_FILE
        self._lock = threading.Lock()

    def filter(self, call: Call, answer: bytes) -> bytes:
        limits = self.policy.limits
        if call.method != "Compute" or "epsilon" not in limits:
            return answer
        budget, delta, multiplier = limits["epsilon"], limits["delta"], call.noise_multiplier
        if multiplier is None:  # The noise was switched off between the two filters: nothing to account for.
            raise Refused(f"Site {call.site!r} refused to send back an answer with a privacy budget but no noise "
                          f"({LIMITS_FILE}).")
        with self._lock:
            spent = read_spent(self.policy.folder)
            before = epsilon_spent(spent, delta)
            after = epsilon_spent([*spent, multiplier], delta)
            if after > budget or math.isnan(after):
                raise Refused(f"Site {call.site!r} refused to send back another round: its privacy budget is "
                              f"epsilon {budget:g} at delta {delta:g} ({LIMITS_FILE}); its {len(spent)} rounds so "
                              f"far spent {before:.3g}, and one more at noise multiplier {multiplier:g} would make "
                              f"{after:.3g}.")
            with open(self.path, "a") as f:
                if f.tell() == 0:
                    f.write("# What this site released under noise, one line per answer (its gatekeeper writes "
                            "it; keep it).\n")
                f.write(f"noise_multiplier = {multiplier!r}\n")
                f.flush()
                os.fsync(f.fileno())
        call.notes.append(f"privacy spent: epsilon {after:.3g} of {budget:g} at delta {delta:g} "
                          f"({len(spent) + 1} rounds)")
        return answer
