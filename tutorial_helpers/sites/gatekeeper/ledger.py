"""The ledger of values a site's worker holds: what a check needs to read the argument of a call.

A `CreateCall` names its function and its argument by reference, values the
controller made at the worker in earlier calls. To check a pinned value in
the argument, the gatekeeper must know what those references hold: the
ledger mirrors, from the calls it forwards, how TFF's C++ worker keeps them.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["Function", "ValueLedger", "numbers", "positions", "same_number", "type_at"]

# The largest array the ledger keeps whole: pins are scalars, model weights are not kept.
KEPT_ARRAY_BYTES = 1024


class Function(NamedTuple):
    """A computation the controller sent whole: its fingerprint and its parameter and result types (Type protos).

    For a call's result (`ValueLedger.called`), `checked` holds the pinned
    values that were checked in that call's argument: {pin name: number}.
    """

    fingerprint: str
    parameter: Any  # None for a computation without a parameter.
    result: Any
    checked: dict = {}


class ValueLedger:
    """What the controller made at one worker, by (executor id, value ref), as the worker keeps it.

    The contract it mirrors, TFF 0.87's C++ worker (`executor_service.cc`):

    * A value is named by the executor it lives in and the ref the worker
      answered with (`CreateValue`, `CreateStruct`, ...).
    * The worker *shares* an executor between every `GetExecutor` holder of
      the same cardinalities, and drops it, with every value in it, when its
      last holder sends `DisposeExecutor`. One holder letting go (a ping,
      say) drops nothing.
    * `Dispose` drops the values it names.
    * An executor is made for a number of clients (its CLIENTS
      cardinality): a round's part at a site runs in an executor made for
      the site's clients in that round.

    What it keeps: computations sent whole (their fingerprint, through
    `fingerprint_of`, and their parameter and result types); values sent
    whole, with arrays over `KEPT_ARRAY_BYTES` cleared (so a pin there is
    refused, not read); structs of refs; and which computation each call's
    result came from (`called`). It does not know what results of calls or
    selections hold: `numbers_at` refuses those. Call `record` after the
    worker answered a call; every method is thread-safe.
    """

    def __init__(self, fingerprint_of: Callable[[Any], str]):
        from tensorflow_federated.proto.v0 import executor_pb2

        self._pb2 = executor_pb2
        self._fingerprint_of = fingerprint_of
        self._values: dict[tuple[str, str], Any] = {}  # Values sent whole (Value protos, pruned).
        self._structs: dict[tuple[str, str], list[tuple[str, str]]] = {}  # Structs of such refs.
        self._functions: dict[tuple[str, str], Function] = {}  # Computations sent whole.
        self._calls: dict[tuple[str, str], Function] = {}  # Results of calls: the computation called.
        self._holders: dict[str, int] = {}  # Executor id -> GetExecutor answers not yet disposed of.
        self._clients: dict[str, int] = {}  # Executor id -> its CLIENTS cardinality (a round's clients here).
        self._lock = threading.RLock()

    def record(self, method: str, request: bytes, answer: bytes, checked: dict | None = None) -> None:
        """Updates the ledger with a call the worker answered (`method` without its service).

        `checked`: for a `CreateCall`, the pinned values checked in its
        argument, kept with its result (`called(...).checked`).
        """
        pb2 = self._pb2
        with self._lock:
            if method == "GetExecutor":
                executor = pb2.GetExecutorResponse.FromString(answer).executor.id
                self._holders[executor] = self._holders.get(executor, 0) + 1
                for cardinality in pb2.GetExecutorRequest.FromString(request).cardinalities:
                    if cardinality.placement.uri == "clients":
                        self._clients[executor] = cardinality.cardinality
            elif method == "CreateValue":
                parsed = pb2.CreateValueRequest.FromString(request)
                key = (parsed.executor.id, pb2.CreateValueResponse.FromString(answer).value_ref.id)
                if parsed.value.WhichOneof("value") == "computation":
                    computation = parsed.value.computation
                    function = computation.type.function
                    self._functions[key] = Function(
                        self._fingerprint_of(computation),
                        function.parameter if function.HasField("parameter") else None,
                        function.result if function.HasField("result") else None)
                else:
                    self._values[key] = _pruned(parsed.value)
            elif method == "CreateStruct":
                parsed = pb2.CreateStructRequest.FromString(request)
                key = (parsed.executor.id, pb2.CreateStructResponse.FromString(answer).value_ref.id)
                self._structs[key] = [(parsed.executor.id, element.value_ref.id) for element in parsed.element]
            elif method == "CreateCall":
                parsed = pb2.CreateCallRequest.FromString(request)
                called = self._functions.get((parsed.executor.id, parsed.function_ref.id))
                if called is not None:
                    key = (parsed.executor.id, pb2.CreateCallResponse.FromString(answer).value_ref.id)
                    self._calls[key] = called._replace(checked=dict(checked or {}))
            elif method == "Dispose":
                parsed = pb2.DisposeRequest.FromString(request)
                for ref in parsed.value_ref:
                    self._forget(lambda key, ref=ref, executor=parsed.executor.id: key == (executor, ref.id))
            elif method == "DisposeExecutor":
                executor = pb2.DisposeExecutorRequest.FromString(request).executor.id
                self._holders[executor] = self._holders.get(executor, 1) - 1
                if self._holders[executor] <= 0:  # Its last holder let go: the worker drops it, and so do we.
                    del self._holders[executor]
                    self._clients.pop(executor, None)
                    self._forget(lambda key: key[0] == executor)

    def _forget(self, matches: Callable[[tuple[str, str]], bool]) -> None:
        for kept in (self._values, self._structs, self._functions, self._calls):
            for key in [key for key in kept if matches(key)]:
                del kept[key]

    def clients(self, executor: str) -> int | None:
        """How many clients the executor was made for (its CLIENTS cardinality); None if it has none."""
        with self._lock:
            return self._clients.get(executor)

    def function(self, executor: str, ref: str) -> Function | None:
        """The computation sent whole under `ref`; None if not known."""
        with self._lock:
            return self._functions.get((executor, ref))

    def called(self, executor: str, ref: str) -> Function | None:
        """The computation whose call made the value `ref` (a `CreateCall`'s result); None if not known."""
        with self._lock:
            return self._calls.get((executor, ref))

    def numbers_at(self, executor: str, ref: str, position: list) -> list[float]:
        """The numbers at `position` (struct indices, "*" for every member of a federated value) of a value.

        Raises ValueError if the value, or the part of it at `position`, is
        not one the ledger knows whole, or holds no array it can read as
        the worker does (`numbers`).
        """
        with self._lock:
            return self._numbers_at((executor, ref), position)

    def _numbers_at(self, key: tuple[str, str], position: list) -> list[float]:
        if key in self._structs:
            if not position or position[0] == "*" or position[0] >= len(self._structs[key]):
                raise ValueError("a struct where the type has none")
            return self._numbers_at(self._structs[key][position[0]], position[1:])
        if key not in self._values:
            raise ValueError("a value the gatekeeper did not see sent whole")
        values = [self._values[key]]
        for step in position:
            if step == "*":
                values = [member for value in values for member in value.federated.value]
            else:
                if not all(value.WhichOneof("value") == "struct" and step < len(value.struct.element)
                           for value in values):
                    raise ValueError("a value whose shape is not its type's")
                values = [value.struct.element[step].value for value in values]
        return [number for value in values for number in numbers(value.array)]


def positions(parameter, wanted: list[str]) -> list[tuple[str, list]]:
    """Where in a value of type `parameter` (a Type proto) a value whose names end with `wanted` sits.

    Each place is (its full name path, its struct positions, "*" for every
    member of a federated value).
    """
    found = []

    def walk(type_proto, names, position):
        kind = type_proto.WhichOneof("type")
        if kind == "struct":
            for i, element in enumerate(type_proto.struct.element):
                walk(element.value, names + ([element.name] if element.name else []), position + [i])
        elif kind == "federated":
            walk(type_proto.federated.member, names, position + ["*"])
        elif names[-len(wanted):] == wanted:
            found.append((".".join(names), position))

    walk(parameter, [], [])
    return found


def type_at(type_proto, position: list):
    """The Type proto at `position` (struct indices, "*" into a federated type) of `type_proto`."""
    for step in position:
        if step == "*":
            type_proto = type_proto.federated.member
        else:
            type_proto = type_proto.struct.element[step].value
    return type_proto


_NUMBER_LISTS = {"float32_list": 1, "float64_list": 2, "int32_list": 3, "int64_list": 9}  # Kind: its DataType.
_RAW = {1: "<f", 2: "<d", 3: "<i", 9: "<q"}  # DataType: how its raw `content` bytes read.


def numbers(array) -> list[float]:
    """The numbers in a TFF Array proto, read as the worker reads them; ValueError for anything else.

    The worker reads the typed list of a scalar and the raw `content` bytes
    of any other shape; an array that carries both, has another kind, or
    holds another number of elements than its shape says, is not read.
    """
    kind = array.WhichOneof("kind")
    dims = list(array.shape.dim)
    count = 1
    for dim in dims:
        count *= dim
    if kind is not None and array.HasField("content"):
        raise ValueError("an array with both a list and raw bytes")
    if array.shape.unknown_rank or any(dim < 0 for dim in dims):
        raise ValueError("an array of unknown shape")
    if kind is not None:
        if _NUMBER_LISTS.get(kind) != array.dtype or dims:
            raise ValueError(f"an array of kind {kind} and type {array.dtype}, shape {dims}")
        found = list(getattr(array, kind).value)
    elif array.HasField("content") and array.dtype in _RAW:
        code = _RAW[array.dtype]
        if len(array.content) != count * struct.calcsize(code):
            raise ValueError(f"{len(array.content)} bytes for {count} numbers")
        found = [v for (v,) in struct.iter_unpack(code, array.content)]
    else:
        raise ValueError(f"an array of type {array.dtype}")
    if len(found) != count:
        raise ValueError(f"{len(found)} numbers for shape {dims}")
    return found


def _pruned(value):
    """What the ledger keeps of a value: small arrays only (no model weights)."""
    kept = type(value)()
    kept.CopyFrom(value)

    def prune(v):
        which = v.WhichOneof("value")
        if which == "array" and v.array.ByteSize() > KEPT_ARRAY_BYTES:
            v.array.Clear()  # Read as "an array of type 0": a pin there is refused, not passed.
        elif which == "struct":
            for element in v.struct.element:
                prune(element.value)
        elif which == "federated":
            for member in v.federated.value:
                prune(member)

    prune(kept)
    return kept


def same_number(number: float, pinned: float) -> bool:
    """Whether `number` is `pinned`, exactly or as the nearest float32 (how TFF sends a learning rate)."""
    as_float32 = struct.unpack("<f", struct.pack("<f", pinned))[0]
    return number in (pinned, as_float32)
