"""A site's gatekeeper: what stands in front of its TFF worker and decides what runs on its data.

A `worker_binary` runs any computation it is sent, `tf.io.read_file` of the
site's files included (notebook 07 shows it). TFF has nothing in front of
it; this module is the kit's answer. The gatekeeper is a gRPC proxy that
speaks TFF's executor protocol (`tensorflow_federated.v0.ExecutorGroup`,
the service `worker_binary` serves). It runs at the site, next to the
worker, in the same private network, and is the only way in:

* It forwards a computation only if its *fingerprint* is on the site's
  approval list, `approved.txt` in the gatekeeper's folder: one line per
  computation, the fingerprint then a description. The site's owner makes
  the lines with ``python -m tutorial_helpers.gatekeeper approve FOLDER
  MODULE:FUNCTION``, which compiles the computations that FUNCTION builds
  (the same code the controller runs), and can read and edit the file. Any
  other computation, and any dataset sent from outside (a site loads its own
  data), is refused before the worker sees it, with an error that names the
  site and the fingerprint.
* It refuses to send back an answer larger than the site's limit (each
  answer; the number of answers is not limited).
* It appends one line per call to the site's audit log, `audit.log`: the
  call, its bytes in and out, and what the gatekeeper did. Lines are only
  ever appended.

A fingerprint is the SHA-256 of the computation as TFF serializes it, made
the same across runs: TFF's per-process cache keys are left out, the
TensorFlow graphs inside are serialized in a fixed order, and the numbers
TensorFlow appends to the names of traced functions (a counter over the
whole process, so they depend on what was traced before) are replaced by
their order, debug information is left out, and TFF's variable names (which
start with a random prefix) are numbered in order. What still changes a
fingerprint is what the computation does: the model, the loss, the
optimizer's kind, the preprocessing, the data loading, and the versions of
TFF and TensorFlow that build the graphs. Not the learning rates: TFF's
optimizers keep them in the state, which reaches the site as a value. A site
pins such values in `pins.txt` (``client_work.learning_rate = 0.02``, made by
``python -m tutorial_helpers.gatekeeper pin``): the gatekeeper then checks,
at each call of a computation whose parameter has a value of that name, the
number the controller sent, and refuses the call if it differs.

The gatekeeper process imports no TensorFlow: the protocol buffers it needs
are plain Python modules, loaded without their packages' heavy `__init__`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import importlib.util
import math
import os
import re
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Mapping
from concurrent import futures
from pathlib import Path
from typing import Any

SERVICE = "tensorflow_federated.v0.ExecutorGroup"
METHODS = ("GetExecutor", "CreateValue", "CreateCall", "CreateStruct", "CreateSelection", "Compute",
           "Dispose", "DisposeExecutor")
APPROVALS = "approved.txt"
PINS = "pins.txt"
AUDIT_LOG = "audit.log"
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_PIN_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_MAX_MESSAGE_BYTES = 2 * 1000 * 1000 * 1000
_GRPC_OPTIONS = [("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                 ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES)]
_APPROVALS_HEADER = """\
# Computations this site runs on its data: one per line, a fingerprint, then what it is.
# Made by `python -m tutorial_helpers.gatekeeper approve`; delete a line to withdraw an approval.
"""


def _import_protos_without_tensorflow() -> None:
    """Makes TFF's and TensorFlow's protocol buffer modules importable without TensorFlow.

    For the gatekeeper process only (it must start in a fraction of a second
    and in little memory): their packages are registered as empty modules,
    so a later `import tensorflow` in this process would fail.
    """
    packages = {"tensorflow_federated": ("proto", "v0"), "tensorflow": ("core", "framework")}
    for top, (middle, leaf) in packages.items():
        if top in sys.modules:
            continue
        spec = importlib.util.find_spec(top)  # Finds the folder; runs nothing.
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(f"{top} is not installed in {sys.executable}'s environment.")
        folder = spec.submodule_search_locations[0]
        for name, path in ((top, folder), (f"{top}.{middle}", os.path.join(folder, middle)),
                           (f"{top}.{middle}.{leaf}", os.path.join(folder, middle, leaf))):
            module = types.ModuleType(name)
            module.__path__ = [path]
            sys.modules[name] = module


# ---------------------------------------------------------------------------
# Fingerprints.

_COUNTERS = re.compile(r"^(.*?)((?:_\d+)+)$")


def _function_renames(names: list[str]) -> dict[str, str]:
    """New names for a graph's functions: each trailing number replaced by its rank among them all."""
    parts = {name: _COUNTERS.match(name) for name in names}
    # Ranked as written (by length, then digits: numeric order), so "5" and "05" stay apart.
    numbers = sorted({n for m in parts.values() if m for n in m.group(2).split("_")[1:]}, key=lambda n: (len(n), n))
    rank = {n: i for i, n in enumerate(numbers)}
    return {name: m.group(1) + "".join(f"_{rank[n]}" for n in m.group(2).split("_")[1:])
            for name, m in parts.items() if m}


def _rename(message, renames: Mapping[str, str]) -> None:
    """Replaces, in every string field of `message` and of the messages in it, each name in `renames`."""
    for field, value in message.ListFields():
        if field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                if field.message_type.fields_by_name["value"].message_type is not None:
                    for item in value.values():
                        _rename(item, renames)
                continue
            for item in (value if field.label == field.LABEL_REPEATED else [value]):
                _rename(item, renames)
        elif field.type in (field.TYPE_STRING, field.TYPE_BYTES):
            is_bytes = field.type == field.TYPE_BYTES
            items = list(value) if field.label == field.LABEL_REPEATED else [value]
            texts = [item.decode("utf-8", "replace") if is_bytes else item for item in items]
            if not any(text in renames for text in texts):
                continue
            # Only the names are replaced; every other item stays as it was, byte for byte.
            new = [(renames[text].encode() if is_bytes else renames[text]) if text in renames else item
                   for text, item in zip(texts, items, strict=True)]
            if field.label == field.LABEL_REPEATED:
                value[:] = new
            else:
                setattr(message, field.name, new[0])


def _canonical_graph(serialized: bytes) -> bytes:
    from tensorflow.core.framework import graph_pb2

    graph = graph_pb2.GraphDef()
    graph.ParseFromString(serialized)
    # Debug information names the functions a node came from, inlined ones too; it does not change what runs.
    for node in [*graph.node, *(node for function in graph.library.function for node in function.node_def)]:
        node.ClearField("experimental_debug_info")
    _rename(graph, _function_renames([f.signature.name for f in graph.library.function]))
    for field, key in (("function", lambda f: f.signature.name), ("gradient", lambda g: g.function_name)):
        items = sorted(getattr(graph.library, field), key=key)
        del getattr(graph.library, field)[:]
        getattr(graph.library, field).extend(items)
    return graph.SerializeToString(deterministic=True)


def _computations_in(message):
    """Every TFF `Computation` message in `message` (itself included)."""
    if message.DESCRIPTOR.full_name == "tensorflow_federated.v0.Computation":
        yield message
    for field, value in message.ListFields():
        if field.message_type is None or field.message_type.GetOptions().map_entry:
            continue
        for item in (value if field.label == field.LABEL_REPEATED else [value]):
            yield from _computations_in(item)


def fingerprint(computation) -> str:
    """The SHA-256 (64 hex digits) of a TFF computation, the same across runs (see the module's docstring).

    `computation` is a `tff.Computation`, or its protocol buffer
    (`tensorflow_federated.proto.v0.computation_pb2.Computation`) or the
    serialized bytes of one.
    """
    return _canonical(computation)[0]


def _canonical(computation) -> tuple[str, dict[int, str]]:
    """The fingerprint, and {cache key id: SHA-256 of that TensorFlow part} for the parts that have one.

    The worker keeps the TensorFlow parts it has compiled by their cache key
    alone; the gatekeeper uses the second value to refuse a key sent again
    with another graph.
    """
    from tensorflow_federated.proto.v0 import computation_pb2

    proto = computation_pb2.Computation()
    if isinstance(computation, bytes):
        proto.ParseFromString(computation)
    elif isinstance(computation, computation_pb2.Computation):
        proto.CopyFrom(computation)
    else:
        proto.CopyFrom(type(computation).get_proto(computation))  # A tff.Computation.
    parts = list(_computations_in(proto))
    names: dict[str, str] = {}  # TFF names its variables with a random prefix: number them in order.
    keys: dict[int, str] = {}
    for part in parts:
        kind = part.WhichOneof("computation")
        if kind == "tensorflow":
            key = part.tensorflow.cache_key.id if part.tensorflow.HasField("cache_key") else None
            part.tensorflow.ClearField("cache_key")  # A random id, new in every process.
            part.tensorflow.graph_def.value = _canonical_graph(part.tensorflow.graph_def.value)
            if key is not None:
                digest = hashlib.sha256(part.tensorflow.SerializeToString(deterministic=True)).hexdigest()
                if keys.setdefault(key, digest) != digest:
                    keys[key] = ""  # One key, two graphs in one computation: never consistent.
    for part in parts:
        kind = part.WhichOneof("computation")
        bound = ([getattr(part, "lambda").parameter_name] if kind == "lambda" else
                 [local.name for local in part.block.local] if kind == "block" else [])
        for name in filter(None, bound):
            names.setdefault(name, f"_v{len(names)}")
    for part in parts:
        kind = part.WhichOneof("computation")
        if kind == "lambda":
            body = getattr(part, "lambda")
            body.parameter_name = names.get(body.parameter_name, body.parameter_name)
        elif kind == "block":
            for local in part.block.local:
                local.name = names.get(local.name, local.name)
        elif kind == "reference":
            part.reference.name = names.get(part.reference.name, part.reference.name)
    return hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest(), keys


def site_part(computation):
    """What a site's worker is sent of `computation`: the part before the merge, as TFF compiles it.

    The kit's `sites.SiteContext` runs `compile_to_mergeable_comp_form(comp)`'s
    `up_to_merge` at each site, through TFF's execution context with TFF's
    native compiler; this returns that computation, compiled the same way.
    """
    import tensorflow_federated as tff

    form = tff.backends.native.compile_to_mergeable_comp_form(computation)
    return tff.backends.native.desugar_and_transform_to_native(form.up_to_merge)


# ---------------------------------------------------------------------------
# The site's approval list.

def read_approvals(folder: str | os.PathLike) -> dict[str, str]:
    """{fingerprint: description} from the approval list in `folder`; {} if there is none yet."""
    path = Path(folder) / APPROVALS
    if not path.exists():
        return {}
    approvals = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fingerprint_, _, description = line.partition(" ")
        if not _FINGERPRINT.fullmatch(fingerprint_):
            raise ValueError(f"{path}, line {number}: {line[:80]!r} does not start with a fingerprint (64 "
                             "hex digits). Fix or delete the line; `approve` writes correct ones.")
        approvals[fingerprint_] = description.strip()
    return approvals


def approve(folder: str | os.PathLike, computations: Mapping[str, object]) -> dict[str, str]:
    """Adds the site parts of `computations` ({description: tff.Computation}) to the approval list.

    Returns {fingerprint: description} of what was added (fingerprints
    already on the list are left as they are). Makes `folder` if needed.
    """
    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    approved = read_approvals(folder)
    added = {}
    for description, computation in computations.items():
        if description.splitlines() != [description]:
            raise ValueError(f"A description must be one line, got {description!r}.")
        value = fingerprint(site_part(computation))
        if value not in approved and value not in added:
            added[value] = description
    path = folder / APPROVALS
    with open(path, "a") as f:
        if f.tell() == 0:
            f.write(_APPROVALS_HEADER)
        for value, description in added.items():
            f.write(f"{value} {description}\n")
    return added


# ---------------------------------------------------------------------------
# The audit log.

class AuditLog:
    """The site's audit log: one line per call, appended, never rewritten."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        # Text from the controller or the worker (in errors) cannot start a line of its own.
        text = text.encode("unicode_escape").decode("ascii")
        line = f"{stamp} {text}\n".encode()
        with self._lock:
            os.write(self._fd, line)  # One write per line, at the end: O_APPEND.

    def close(self) -> None:
        os.close(self._fd)


def read_audit_log(folder: str | os.PathLike) -> list[dict[str, str]]:
    """The audit log's call lines, each as a dict: time, call, in, out, verdict, detail (and code).

    [] if the site's gatekeeper has not run yet.
    """
    path = Path(folder) / AUDIT_LOG
    entries = []
    for line in (path.read_text().splitlines() if path.exists() else []):
        head, _, detail = line.partition(" -- ")
        stamp, _, rest = head.partition(" ")
        call, *pairs = rest.split(" ") if rest else [""]
        fields = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
        if "verdict" in fields:  # Not the lines that say the gatekeeper started or stopped.
            entries.append({"time": stamp, "call": call, **fields, "detail": detail})
    return entries


def read_pins(folder: str | os.PathLike) -> dict[str, float]:
    """The site's pinned values, `pins.txt`: {name: number}; {} if there is no such file.

    One per line, ``NAME = NUMBER``; NAME is the path of a value in a
    computation's parameter, by its names, as short as is unambiguous
    (``client_work.learning_rate``). ``#`` starts a comment.
    """
    path = Path(folder) / PINS
    pins: dict[str, float] = {}
    for number, line in enumerate(path.read_text().splitlines() if path.exists() else [], 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        name, sep, value = (part.strip() for part in text.partition("="))
        try:
            if not sep or not _PIN_NAME.fullmatch(name) or not math.isfinite(float(value)):
                raise ValueError
            pins[name] = float(value)
        except ValueError:
            raise ValueError(f"{path}, line {number}: {line!r} is not NAME = NUMBER, a finite number (for "
                             "instance client_work.learning_rate = 0.02).") from None
    return pins


def pin(folder: str | os.PathLike, values: Mapping[str, float]) -> dict[str, float]:
    """Pins `values` ({name: number}) in the site's `pins.txt`, replacing earlier pins of the same names.

    Returns every pin now in the file. A gatekeeper reads the file when it
    starts: restart it after a change. A name that no approved computation's
    parameter has checks nothing; each call's line in the audit log names the
    pins it checked.
    """
    folder = Path(folder)
    pins = {**read_pins(folder), **{name: float(value) for name, value in values.items()}}
    for name, value in pins.items():
        if not _PIN_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a value's name path (for instance client_work.learning_rate).")
        if not math.isfinite(value):
            raise ValueError(f"{name} = {value}: a pin must be a finite number.")
    text = "".join(f"{name} = {value!r}\n" for name, value in pins.items())
    (folder / PINS).write_text("# Values this site pins: a call that sends another number is refused.\n" + text)
    return pins


def _positions(parameter, wanted: list[str]) -> list[tuple[str, list]]:
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


_NUMBER_LISTS = {"float32_list": 1, "float64_list": 2, "int32_list": 3, "int64_list": 9}  # Kind: its DataType.
_RAW = {1: "<f", 2: "<d", 3: "<i", 9: "<q"}  # DataType: how its raw `content` bytes read.


def _numbers(array) -> list[float]:
    """The numbers in a TFF Array proto, read as the worker reads them; ValueError for anything else.

    The worker reads the typed list of a scalar and the raw `content` bytes
    of any other shape; an array that carries both, has another kind, or
    holds another number of elements than its shape says, is not read.
    """
    import struct

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
        numbers = list(getattr(array, kind).value)
    elif array.HasField("content") and array.dtype in _RAW:
        code = _RAW[array.dtype]
        if len(array.content) != count * struct.calcsize(code):
            raise ValueError(f"{len(array.content)} bytes for {count} numbers")
        numbers = [v for (v,) in struct.iter_unpack(code, array.content)]
    else:
        raise ValueError(f"an array of type {array.dtype}")
    if len(numbers) != count:
        raise ValueError(f"{len(numbers)} numbers for shape {dims}")
    return numbers


def _kept(value):
    """What the gatekeeper keeps of a value it may have to check: small arrays only (no model weights)."""
    kept = type(value)()
    kept.CopyFrom(value)

    def prune(v):
        which = v.WhichOneof("value")
        if which == "array" and v.array.ByteSize() > 1024:
            v.array.Clear()  # Read as "an array of type 0": a pin there is refused, not passed.
        elif which == "struct":
            for element in v.struct.element:
                prune(element.value)
        elif which == "federated":
            for member in v.federated.value:
                prune(member)

    prune(kept)
    return kept


def _same(number: float, pinned: float) -> bool:
    import struct

    as_float32 = struct.unpack("<f", struct.pack("<f", pinned))[0]
    return number in (pinned, as_float32)


# ---------------------------------------------------------------------------
# The gatekeeper a site starts.

@dataclasses.dataclass(frozen=True)
class Gatekeeper:
    """What a site's gatekeeper needs: pass one to `WorkerProcess` or `sites.create_site_context`.

    Attributes:
      folder: the gatekeeper's folder, with the site's approval list
        (`approved.txt`, made by `approve`) and its audit log (`audit.log`).
        Keep it outside the site's data root; where the worker runs as a
        user of its own (`WorkerProcess(user=...)`), that user cannot change it.
      site: the site's name, in errors and the log.
      max_result_bytes: the largest answer the site sends back; None for no
        limit.
      The folder may also hold `pins.txt` (`pin`): values the site pins.
      tls: the site's folder from `python -m tutorial_helpers.tls make` (its
        certificate and key, and the workshop's authority): the gatekeeper
        then speaks mutual TLS only, and serves only a client whose
        certificate, from that authority, names `controller`. None: plain
        gRPC (on one machine, where only this user's processes reach it).
      controller: the name the controller's certificate must carry.
    """

    folder: str | os.PathLike
    site: str = "site"
    max_result_bytes: int | None = None
    tls: str | os.PathLike | None = None
    controller: str = "controller"

    def __post_init__(self):
        if not Path(self.folder).is_dir():
            raise FileNotFoundError(f"The gatekeeper's folder {self.folder} of site {self.site!r} does not exist: "
                                    "make it, and approve computations into it with `python -m "
                                    "tutorial_helpers.gatekeeper approve`.")
        read_approvals(self.folder)  # A broken list is reported here, not in the gatekeeper's log.
        read_pins(self.folder)
        if self.max_result_bytes is not None and self.max_result_bytes <= 0:
            raise ValueError(f"max_result_bytes must be a positive number of bytes or None, "
                             f"got {self.max_result_bytes}.")
        if self.tls is not None:
            from tutorial_helpers.tls import Identity

            Identity(self.tls)  # Missing files are reported here, not in the gatekeeper's log.

    def command(self, worker: list[str], *, worker_port: int, port: int,
                worker_user: tuple[int, int] | None = None) -> list[str]:
        """The command that runs this gatekeeper on `port` in front of `worker` (which listens on `worker_port`)."""
        return [sys.executable, "-P", "-m", __name__, "serve", f"--site={self.site}",
                f"--folder={os.path.abspath(self.folder)}", f"--port={port}", f"--worker-port={worker_port}",
                f"--max-result-bytes={self.max_result_bytes or 0}",
                *([] if self.tls is None else [f"--tls={os.path.abspath(self.tls)}", f"--controller={self.controller}"]),
                *([] if worker_user is None else [f"--worker-user={worker_user[0]}:{worker_user[1]}"]),
                "--", *worker]


# ---------------------------------------------------------------------------
# The proxy.

class Refused(Exception):
    """A call the gatekeeper does not forward; its message goes to the controller."""


class Unauthenticated(Refused):
    """A call from a client whose certificate is not the controller's."""


class Gate:
    """Checks and forwards each executor call to the worker; one per gatekeeper."""

    def __init__(self, site: str, approvals: Mapping[str, str], log: AuditLog, worker: str,
                 max_result_bytes: int | None = None, controller: str | None = None,
                 pins: Mapping[str, float] | None = None):
        import grpc
        from tensorflow_federated.proto.v0 import executor_pb2

        self.site = site
        self.approvals = dict(approvals)
        self.log = log
        self.max_result_bytes = max_result_bytes
        self.controller = controller  # With TLS: the name the client's certificate must carry.
        self.pins = dict(pins or {})
        # With pins: what the controller made at the worker, by (executor, value ref), to check calls against.
        self._values: dict[tuple[str, str], Any] = {}  # Values sent whole (Value protos).
        self._structs: dict[tuple[str, str], list[tuple[str, str]]] = {}  # Structs of such refs.
        self._functions: dict[tuple[str, str], tuple[str, Any]] = {}  # Computations: (fingerprint, parameter).
        self._holders: dict[str, int] = {}  # Executor id -> GetExecutor answers not yet disposed of.
        self._kept_lock = threading.Lock()
        self._executor_pb2 = executor_pb2
        self._channel = grpc.insecure_channel(worker, _GRPC_OPTIONS)
        self._forward = {method: self._channel.unary_unary(f"/{SERVICE}/{method}") for method in METHODS}
        self._known: dict[bytes, tuple[str, dict[int, str]]] = {}  # sha256 of a computation's bytes -> _canonical
        self._cache_keys: dict[int, str] = {}  # cache key id -> the TensorFlow part the worker compiled for it
        self._lock = threading.Lock()

    def _fingerprint(self, computation) -> str:
        raw = computation.SerializeToString()
        digest = hashlib.sha256(raw).digest()
        if digest not in self._known:
            self._known[digest] = _canonical(raw)
        found, keys = self._known[digest]
        if found not in self.approvals:
            raise Refused(f"Site {self.site!r} refused computation {found}: it is not on the site's approval "
                          f"list ({APPROVALS}). The site's owner approves computations with `python -m "
                          "tutorial_helpers.gatekeeper approve`.")
        with self._lock:  # The worker runs a TensorFlow part it compiled before by its cache key alone.
            if any(self._cache_keys.get(key, part) != part or not part for key, part in keys.items()):
                raise Refused(f"Site {self.site!r} refused computation {found}: it names a TensorFlow part by "
                              "a cache key that this worker already holds for another one.")
            self._cache_keys.update(keys)
        return found

    def check_value(self, value) -> list[str]:
        """The fingerprints of the approved computations in `value`; raises Refused for anything else."""
        which = value.WhichOneof("value")
        if which == "computation":
            return [self._fingerprint(value.computation)]
        if which == "sequence":
            raise Refused(f"Site {self.site!r} refused a dataset sent to it: a site loads its own data, and "
                          "takes no datasets from outside.")
        if which == "struct":
            return [f for element in value.struct.element for f in self.check_value(element.value)]
        if which == "federated":
            return [f for member in value.federated.value for f in self.check_value(member)]
        return []  # An array (a tensor): model weights, client ids.

    def handle(self, method: str, request: bytes, context) -> bytes:
        import grpc

        note = ""
        try:
            if self.controller is not None:
                from tutorial_helpers.tls import peer_name

                peer = peer_name(context)
                if peer != self.controller:
                    raise Unauthenticated(f"Site {self.site!r} serves only the controller: the client's "
                                          f"certificate names {peer!r}, not {self.controller!r}.")
            if method == "CreateValue":
                parsed = self._executor_pb2.CreateValueRequest.FromString(request)
                found = self.check_value(parsed.value)
                note = " ".join(f"computation={f} ({self.approvals[f]})" for f in found)
            elif method == "CreateCall" and self.pins:
                with self._kept_lock:
                    note = self.check_pins(self._executor_pb2.CreateCallRequest.FromString(request))
            if not context.is_active():  # The controller gave up (its deadline passed) while this call waited.
                raise Refused(f"Site {self.site!r} did not forward a {method} its controller no longer waits for.")
            # No longer than the controller waits: a frozen worker must not hold the gatekeeper's threads.
            # (Without a deadline, gRPC gives the time remaining as infinite, or about 2**63 ns.)
            remaining = context.time_remaining()
            answer = self._forward[method](
                request, timeout=remaining if remaining is not None and remaining < 1e7 else None)
            if self.pins:
                with self._kept_lock:
                    self._remember(method, request, answer)
            if (method == "Compute" and self.max_result_bytes is not None
                    and len(answer) > self.max_result_bytes):
                raise Refused(f"Site {self.site!r} refused to send back a result of {len(answer):,} bytes: "
                              f"its limit is {self.max_result_bytes:,} bytes.")
        except Refused as e:
            self.log.write(f"{method} in={len(request)} out=0 verdict=refused -- {e}")
            code = grpc.StatusCode.UNAUTHENTICATED if isinstance(e, Unauthenticated) else grpc.StatusCode.PERMISSION_DENIED
            context.abort(code, str(e))
        except grpc.RpcError as e:
            self.log.write(f"{method} in={len(request)} out=0 verdict=error code={e.code().name} -- "
                           f"{(e.details() or '')[:200]}")
            context.abort(e.code(), e.details() or "")
        except Exception as e:  # A request the gatekeeper cannot read: refused, and logged like the rest.
            message = f"Site {self.site!r} refused a request it could not read: {type(e).__name__}: {e}"
            self.log.write(f"{method} in={len(request)} out=0 verdict=refused -- {message}")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        self.log.write(f"{method} in={len(request)} out={len(answer)} verdict=forwarded"
                       + (f" -- {note}" if note else ""))
        return answer

    def _remember(self, method: str, request: bytes, answer: bytes) -> None:
        """Keeps what a call made at the worker (with pins only), and forgets what the controller disposed of."""
        pb2 = self._executor_pb2
        if method == "GetExecutor":  # The worker shares an executor between holders of the same cardinalities.
            executor = pb2.GetExecutorResponse.FromString(answer).executor.id
            self._holders[executor] = self._holders.get(executor, 0) + 1
        elif method == "CreateValue":
            parsed = pb2.CreateValueRequest.FromString(request)
            key = (parsed.executor.id, pb2.CreateValueResponse.FromString(answer).value_ref.id)
            if parsed.value.WhichOneof("value") == "computation":
                computation = parsed.value.computation
                parameter = computation.type.function.parameter if computation.type.HasField("function") else None
                self._functions[key] = (self._fingerprint(computation), parameter)
            else:
                self._values[key] = _kept(parsed.value)
        elif method == "CreateStruct":
            parsed = pb2.CreateStructRequest.FromString(request)
            key = (parsed.executor.id, pb2.CreateStructResponse.FromString(answer).value_ref.id)
            self._structs[key] = [(parsed.executor.id, element.value_ref.id) for element in parsed.element]
        elif method == "Dispose":
            parsed = pb2.DisposeRequest.FromString(request)
            for ref in parsed.value_ref:
                for kept in (self._values, self._structs, self._functions):
                    kept.pop((parsed.executor.id, ref.id), None)
        elif method == "DisposeExecutor":
            executor = pb2.DisposeExecutorRequest.FromString(request).executor.id
            self._holders[executor] = self._holders.get(executor, 1) - 1
            if self._holders[executor] <= 0:  # Its last holder let go: the worker drops it, and so does the gate.
                del self._holders[executor]
                for kept in (self._values, self._structs, self._functions):
                    for key in [key for key in kept if key[0] == executor]:
                        del kept[key]

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
                values = [value.struct.element[step].value for value in values]
        return [number for value in values for number in _numbers(value.array)]

    def check_pins(self, call) -> str:
        """Refuses a call whose argument carries a pinned value with another number; returns a note for the log."""
        function = self._functions.get((call.executor.id, call.function_ref.id))
        if function is None:
            raise Refused(f"Site {self.site!r} refused a call of a computation it did not see sent whole: it "
                          f"checks its pinned values ({PINS}) only on computations sent to it as such.")
        found, parameter = function
        checked, absent = [], []
        for name, pinned in self.pins.items():
            places = [] if parameter is None else _positions(parameter, name.split("."))
            if not places:
                absent.append(name)
            for path, position in places:
                try:
                    numbers = self._numbers_at((call.executor.id, call.argument_ref.id), position)
                except (ValueError, IndexError, KeyError) as e:
                    raise Refused(f"Site {self.site!r} refused computation {found}: it could not read the "
                                  f"{path} it pins ({name}) in the call's argument ({e}).") from None
                wrong = [number for number in numbers if not _same(number, pinned)]
                if wrong or not numbers:
                    raise Refused(f"Site {self.site!r} refused computation {found}: its {path} is "
                                  f"{f'{wrong[0]:.7g}' if wrong else 'missing'}, and the site pins it to {pinned:g} "
                                  f"({PINS}).")
                checked.append(f"{path}={pinned}")
        return (f"computation={found}" + (f" pinned {' '.join(checked)}" if checked else "")
                + (f" (pins not in its parameter: {' '.join(absent)})" if absent else ""))

    def handler(self):
        import grpc

        def method_handler(method):
            return grpc.unary_unary_rpc_method_handler(lambda request, context: self.handle(method, request, context))

        return grpc.method_handlers_generic_handler(SERVICE, {m: method_handler(m) for m in METHODS})

    def close(self) -> None:
        self._channel.close()


def _serve(args) -> int:
    import grpc

    from tutorial_helpers.runtime import launcher

    folder = Path(args.folder)
    try:
        approvals = read_approvals(folder)
        pins = read_pins(folder)
        log = AuditLog(folder / AUDIT_LOG)
    except (OSError, ValueError) as e:
        print(f"gatekeeper: site {args.site!r}: {e}", file=sys.stderr, flush=True)
        return 2
    user = None if args.worker_user is None else tuple(int(p) for p in args.worker_user.split(":"))
    stop = threading.Event()  # Before the worker starts: a stop while it starts is heard.
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker = launcher.start_command(args.command, user)
    server = gate = None
    try:
        deadline = time.monotonic() + 60
        while not stop.is_set() and worker.poll() is None and not _listens(args.worker_port):
            if time.monotonic() > deadline:
                message = f"gatekeeper for site {args.site!r}: the worker did not listen within 60 s"
                log.write(message)
                print(message, file=sys.stderr, flush=True)  # Into the kit's log of the process, for its error.
                break
            stop.wait(0.05)
        if stop.is_set() or worker.poll() is not None or not _listens(args.worker_port):
            raise launcher._CommandEnded
        gate = Gate(args.site, approvals, log, f"127.0.0.1:{args.worker_port}",
                    None if args.max_result_bytes <= 0 else args.max_result_bytes,
                    controller=None if args.tls is None else args.controller, pins=pins)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), options=_GRPC_OPTIONS)
        server.add_generic_rpc_handlers((gate.handler(),))
        if args.tls is None:
            server.add_insecure_port(f"127.0.0.1:{args.port}")
        else:
            from tutorial_helpers.tls import Identity

            server.add_secure_port(f"127.0.0.1:{args.port}", Identity(args.tls).server_credentials())
        server.start()
        limit = "none" if gate.max_result_bytes is None else f"{gate.max_result_bytes:,} bytes"
        tls = "no TLS" if args.tls is None else f"mutual TLS, serving only {args.controller!r}"
        pinned = ", ".join(f"{name} = {value}" for name, value in pins.items()) or "none"
        log.write(f"gatekeeper started for site {args.site!r}: {len(approvals)} approved computations, "
                  f"pinned values {pinned}, result limit {limit}, {tls}, worker pid {worker.pid}")
        while not stop.is_set() and worker.poll() is None:
            stop.wait(0.1)
    except launcher._CommandEnded:
        pass
    finally:
        if server is not None:
            server.stop(grace=0)
        if gate is not None:
            gate.close()
        launcher.stop_command(worker)
        code = worker.returncode
        log.write(f"gatekeeper stopped for site {args.site!r}: worker "
                  + ("stopped by the kit" if stop.is_set() else f"ended with code {code}"))
        log.close()
    if stop.is_set():
        return 0
    if code is not None and code < 0:  # End as the worker ended, so the kit's error names the signal.
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # These two have no handler to reset.
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code or 1


def _listens(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _load(target: str) -> Callable[[], Mapping[str, object]]:
    module, _, function = target.partition(":")
    if not module or not function:
        raise SystemExit(f"approve: {target!r} is not MODULE:FUNCTION (for instance "
                         "tutorial_helpers.sites:fed_avg_computations).")
    import importlib

    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tutorial_helpers.gatekeeper", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="what", required=True)
    serve = commands.add_parser("serve", help="run a site's gatekeeper in front of its worker (the kit starts it)")
    serve.add_argument("--site", required=True, help="the site's name, for errors and the log")
    serve.add_argument("--folder", required=True, help=f"the gatekeeper's folder: {APPROVALS}, {AUDIT_LOG}")
    serve.add_argument("--port", type=int, required=True, help="port to listen on, on 127.0.0.1")
    serve.add_argument("--worker-port", type=int, required=True, help="the worker's port, on 127.0.0.1")
    serve.add_argument("--max-result-bytes", type=int, default=0, help="largest answer sent back (0: no limit)")
    serve.add_argument("--worker-user", help="UID:GID to run the worker as (root only)")
    serve.add_argument("--tls", help="the site's folder from `python -m tutorial_helpers.tls make`: mutual TLS")
    serve.add_argument("--controller", default="controller", help="with --tls: the name the client's certificate "
                       "must carry (default: controller)")
    serve.add_argument("command", nargs="+", help="the worker's command, after --")
    agree = commands.add_parser("approve", help="add the computations a function builds to a site's approval list")
    agree.add_argument("folder", help="the site's gatekeeper folder")
    agree.add_argument("target", help="MODULE:FUNCTION returning {description: tff.Computation}")
    pinning = commands.add_parser("pin", help="pin values (a learning rate) in a site's pins.txt")
    pinning.add_argument("folder", help="the site's gatekeeper folder")
    pinning.add_argument("values", nargs="+", metavar="NAME=NUMBER", help="client_work.learning_rate=0.02")
    args = parser.parse_args(argv)
    if args.what == "pin":
        given = {}
        for value in args.values:
            name, sep, number = value.partition("=")
            try:
                given[name.strip()] = float(number)
            except ValueError:
                sep = ""
            if not sep:
                parser.error(f"{value!r} is not NAME=NUMBER (for instance client_work.learning_rate=0.02)")
        try:
            pins = pin(args.folder, given)
        except (OSError, ValueError) as e:
            parser.error(str(e))
        for name, number in pins.items():
            print(f"pinned {name} = {number}")
        return 0
    if args.what == "serve":
        _import_protos_without_tensorflow()
        return _serve(args)
    added = approve(args.folder, _load(args.target)())
    for value, description in added.items():
        print(f"approved {value} {description}")
    print(f"{len(added)} added; {len(read_approvals(args.folder))} on {Path(args.folder) / APPROVALS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
