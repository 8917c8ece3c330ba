"""The gatekeeper's checks: small classes in two chains, one on what comes in, one on what goes out.

Each executor call the controller sends passes every *incoming check* in
order, then goes to the worker; the worker's answer passes every *outgoing
filter* in order, then leaves the site. A check or filter that says no
raises `Refused`, whose message goes to the controller and the audit log;
the call then stops there. This is NVFlare's pattern of task-data and
task-result filters on a client, applied to TFF's executor calls.

To add a rule, write a class with the one method its chain calls and a
docstring that states what it refuses and what it lets through, and put it
in the chain (`proxy.standard_chains`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Protocol

from tutorial_helpers.sites.gatekeeper.fingerprints import CacheKeyReused, Fingerprints
from tutorial_helpers.sites.gatekeeper.ledger import ValueLedger, positions, same_number
from tutorial_helpers.sites.gatekeeper.policy import APPROVALS, LIMITS_FILE, PINS, TRUSTED_CONTROLLER, Policy

__all__ = ["REVIEWED_METHODS", "ApprovedComputations", "Call", "DistinctClients", "IncomingCheck", "MinimumCohort",
           "NoDatasetsFromOutside", "OutgoingFilter", "PinnedValues", "Refused", "RememberValues", "ResultCap",
           "ReviewedMethodsOnly", "TrustNeedsTls", "Unauthenticated", "executor_methods"]

SERVICE = "tensorflow_federated.v0.ExecutorGroup"

# The calls of TFF 0.87's executor service whose meaning the checks below were written for. A call TFF
# adds later is refused (`ReviewedMethodsOnly`) until someone reads what it does and adds it here;
# tests/test_gatekeeper.py fails when TFF's service has a call that is not in this list.
REVIEWED_METHODS = frozenset({"GetExecutor", "CreateValue", "CreateCall", "CreateStruct", "CreateSelection",
                              "Compute", "Dispose", "DisposeExecutor"})


@functools.cache
def executor_methods() -> tuple[str, ...]:
    """The calls of TFF's executor service, read from TFF's own service descriptor (`executor_pb2`)."""
    from tensorflow_federated.proto.v0 import executor_pb2

    service = executor_pb2.DESCRIPTOR.services_by_name[SERVICE.rsplit(".", 1)[1]]
    return tuple(method.name for method in service.methods)


class Refused(Exception):
    """A call the gatekeeper does not forward, or an answer it does not send back; the message says why."""


class Unauthenticated(Refused):
    """A call from a client whose certificate is not the controller's."""


@dataclasses.dataclass
class Call:
    """One executor call as the checks see it: the site, the call's name, its request, and notes for the log."""

    site: str
    method: str  # The call's name in TFF's service: "CreateValue", "Compute", ...
    request: bytes
    notes: list[str] = dataclasses.field(default_factory=list)  # What the checks say, for the audit log.
    # The pinned values PinnedValues checked in this call's argument ({pin name: number}); the ledger keeps them
    # with the call's result, so that what is later done with the result uses the numbers that were checked.
    checked: dict[str, float] = dataclasses.field(default_factory=dict)
    noise_multiplier: float | None = None  # The noise SiteNoise applied to this answer (PrivacyBudget records it).

    @functools.cached_property
    def parsed(self) -> Any:
        """The request, parsed as TFF's executor protocol defines it."""
        from tensorflow_federated.proto.v0 import executor_pb2

        return getattr(executor_pb2, f"{self.method}Request").FromString(self.request)


class IncomingCheck(Protocol):
    """Looks at a call before it reaches the worker."""

    def check(self, call: Call) -> None:
        """Raises `Refused` to stop the call; may add notes to `call.notes`; never changes the request."""


class OutgoingFilter(Protocol):
    """Looks at the worker's answer to a call before it leaves the site."""

    def filter(self, call: Call, answer: bytes) -> bytes:
        """Returns the answer to send back (the same bytes or changed ones), or raises `Refused`."""


# ---------------------------------------------------------------------------
# Incoming.

class ReviewedMethodsOnly:
    """Refuses any call that is not in `REVIEWED_METHODS`: what TFF adds later is refused until reviewed."""

    def check(self, call: Call) -> None:
        if call.method not in REVIEWED_METHODS:
            raise Refused(f"Site {call.site!r} refused a {call.method} call: its gatekeeper does not know that "
                          "call of TFF's executor service, so it forwards none.")


class TrustNeedsTls:
    """For a gatekeeper without TLS: refuses every call while the site trusts one controller certificate.

    `trusted_controller.txt` can be checked only over mutual TLS; without
    it, serving anyone would ignore what the site asked for (fails closed).
    """

    def __init__(self, policy: Policy):
        self.policy = policy

    def check(self, call: Call) -> None:
        if self.policy.current().controller is not None:
            raise Refused(f"Site {call.site!r} trusts one controller certificate ({TRUSTED_CONTROLLER}) but its "
                          "gatekeeper runs without TLS, so it cannot check it: start the site with TLS, or delete "
                          "the file.")


class NoDatasetsFromOutside:
    """Refuses a `CreateValue` that carries a dataset anywhere in its value: a site loads its own data."""

    def check(self, call: Call) -> None:
        if call.method == "CreateValue" and _has_sequence(call.parsed.value):
            raise Refused(f"Site {call.site!r} refused a dataset sent to it: a site loads its own data, and "
                          "takes no datasets from outside.")


def _has_sequence(value) -> bool:
    which = value.WhichOneof("value")
    if which == "sequence":
        return True
    if which == "struct":
        return any(_has_sequence(element.value) for element in value.struct.element)
    if which == "federated":
        return any(_has_sequence(member) for member in value.federated.value)
    return False


def _computations_in_value(value) -> list:
    which = value.WhichOneof("value")
    if which == "computation":
        return [value.computation]
    if which == "struct":
        return [c for element in value.struct.element for c in _computations_in_value(element.value)]
    if which == "federated":
        return [c for member in value.federated.value for c in _computations_in_value(member)]
    return []  # An array (a tensor): model weights, client ids; or a dataset (NoDatasetsFromOutside).


class DistinctClients:
    """Refuses a `CreateValue` whose value, anywhere in it, is placed at the clients with two members alike.

    A round's clients are the members of a value placed at CLIENTS (their
    ids). The same id twice, or one member marked as the same for every
    client (``all_equal``) in an executor made for more than one client,
    counts one client's update several times in the site's sum: past its
    minimum number of clients, and past the noise that is set for one
    client's part. Each member must be different (compared as sent).
    """

    def __init__(self, ledger: ValueLedger):
        self.ledger = ledger

    def check(self, call: Call) -> None:
        if call.method != "CreateValue":
            return
        for federated in _federated_at_clients(call.parsed.value):
            clients = self.ledger.clients(call.parsed.executor.id)
            if federated.type.all_equal and clients != 1:
                raise Refused(f"Site {call.site!r} refused a value that is the same for every one of "
                              f"{clients} clients: each client of a round is a different client.")
            members = [member.SerializeToString() for member in federated.value]
            if len(set(members)) != len(members):
                raise Refused(f"Site {call.site!r} refused a round that names the same client more than once: "
                              "each client of a round counts once.")


def _federated_at_clients(value) -> list:
    which = value.WhichOneof("value")
    if which == "struct":
        return [f for element in value.struct.element for f in _federated_at_clients(element.value)]
    if which == "federated" and value.federated.type.placement.value.uri == "clients":
        return [value.federated]
    return []


class ApprovedComputations:
    """Lets a `CreateValue` through only if every computation in its value is on the site's approval list.

    The list is the policy's as it is now (`Policy`: a withdrawn approval
    takes effect at the next call). A computation that names a TensorFlow
    part by a cache key the worker already holds for another part is refused
    too (`Fingerprints.claim_keys`): the worker would run the part it holds.
    Notes each approved computation for the log.
    """

    def __init__(self, policy: Policy, fingerprints: Fingerprints):
        self.policy = policy
        self.fingerprints = fingerprints

    def check(self, call: Call) -> None:
        if call.method != "CreateValue":
            return
        approvals = self.policy.approvals
        for computation in _computations_in_value(call.parsed.value):
            found, keys = self.fingerprints.form(computation)
            if found not in approvals:
                raise Refused(f"Site {call.site!r} refused computation {found}: it is not on the site's approval "
                              f"list ({APPROVALS}). The site's owner approves computations with `python -m "
                              "tutorial_helpers.gatekeeper approve`.")
            try:
                self.fingerprints.claim_keys(keys)
            except CacheKeyReused as e:
                raise Refused(f"Site {call.site!r} refused computation {found}: {e}.") from None
            call.notes.append(f"computation={found} ({approvals[found]})")


class PinnedValues:
    """Refuses a `CreateCall` whose argument carries a pinned value with another number.

    For each pin (`pins.txt`, as the policy has it now) that the called
    computation's parameter has, by its name path, it reads the number at
    that place in the argument from the `ValueLedger`, as the worker would
    read it, and refuses the call if any differs, or if it cannot read it
    (an argument the ledger did not see sent whole, a large array, an array
    the worker would read otherwise). With no pins it lets everything
    through. Notes the pins it checked, and the pins the parameter lacks.
    """

    def __init__(self, policy: Policy, ledger: ValueLedger):
        self.policy = policy
        self.ledger = ledger

    def check(self, call: Call) -> None:
        pins = self.policy.pins
        if call.method != "CreateCall" or not pins:
            return
        request = call.parsed
        function = self.ledger.function(request.executor.id, request.function_ref.id)
        if function is None:
            raise Refused(f"Site {call.site!r} refused a call of a computation it did not see sent whole: it "
                          f"checks its pinned values ({PINS}) only on computations sent to it as such.")
        found, parameter = function.fingerprint, function.parameter
        checked, absent = [], []
        for name, pinned in pins.items():
            places = [] if parameter is None else positions(parameter, name.split("."))
            if not places:
                absent.append(name)
            for path, position in places:
                try:
                    numbers = self.ledger.numbers_at(request.executor.id, request.argument_ref.id, position)
                except (ValueError, IndexError, KeyError) as e:
                    raise Refused(f"Site {call.site!r} refused computation {found}: it could not read the "
                                  f"{path} it pins ({name}) in the call's argument ({e}).") from None
                wrong = [number for number in numbers if not same_number(number, pinned)]
                if wrong or not numbers:
                    raise Refused(f"Site {call.site!r} refused computation {found}: its {path} is "
                                  f"{f'{wrong[0]:.7g}' if wrong else 'missing'}, and the site pins it to {pinned:g} "
                                  f"({PINS}).")
                checked.append(f"{path}={pinned}")
                call.checked[name] = pinned
        call.notes.append(f"computation={found}" + (f" pinned {' '.join(checked)}" if checked else "")
                          + (f" (pins not in its parameter: {' '.join(absent)})" if absent else ""))


# ---------------------------------------------------------------------------
# Outgoing.

class ResultCap:
    """Refuses to send back the answer to a `Compute` larger than `max_bytes`; lets every other answer through.

    It limits each answer's size, not their number, and cannot tell an
    update from a leak of the same size.
    """

    def __init__(self, max_bytes: int):
        if max_bytes <= 0:
            raise ValueError(f"A result cap must be a positive number of bytes, got {max_bytes}.")
        self.max_bytes = max_bytes

    def filter(self, call: Call, answer: bytes) -> bytes:
        if call.method == "Compute" and len(answer) > self.max_bytes:
            raise Refused(f"Site {call.site!r} refused to send back a result of {len(answer):,} bytes: "
                          f"its limit is {self.max_bytes:,} bytes.")
        return answer


class MinimumCohort:
    """Refuses to send back the result of a `Compute` run for fewer of the site's clients than its minimum.

    The minimum is the policy's ``min_clients`` (`limits.txt`), as it is now;
    without one, every answer goes through. A round's part at a site runs in
    an executor made for the site's clients in that round (`ValueLedger`);
    its result, the partial aggregate, is then a sum over that many clients.
    A sum over one client is that client's update, from which an example can
    be read back. What it does not stop: the difference of two rounds that
    differ by one client, or weights the controller crafted; it limits how
    few clients a result covers, not what it tells about each.
    """

    def __init__(self, policy: Policy, ledger: ValueLedger):
        self.policy = policy
        self.ledger = ledger

    def filter(self, call: Call, answer: bytes) -> bytes:
        minimum = self.policy.limits.get("min_clients")
        if call.method != "Compute" or minimum is None:
            return answer
        clients = self.ledger.clients(call.parsed.executor.id)
        if clients is not None and 0 < clients < minimum:
            raise Refused(f"Site {call.site!r} refused to send back a result computed from {clients} of its "
                          f"clients: its minimum is {minimum} ({LIMITS_FILE}), so that no result is one client's "
                          "own, or nearly.")
        return answer


class RememberValues:
    """Lets every answer through unchanged, and records the call in the `ValueLedger` (for `PinnedValues`)."""

    def __init__(self, ledger: ValueLedger):
        self.ledger = ledger

    def filter(self, call: Call, answer: bytes) -> bytes:
        self.ledger.record(call.method, call.request, answer, checked=call.checked)
        return answer
