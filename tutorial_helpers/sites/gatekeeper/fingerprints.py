"""A computation's fingerprint: the SHA-256 of what it does, the same in every process that builds it.

A fingerprint is the SHA-256 of the computation as TFF serializes it, made
the same across runs: TFF's per-process cache keys are left out, the
TensorFlow graphs inside are serialized in a fixed order, the numbers
TensorFlow appends to the names of traced functions (a counter over the
whole process, so they depend on what was traced before) are replaced by
their order, debug information is left out, and TFF's variable names (which
start with a random prefix) are numbered in order. What still changes a
fingerprint is what the computation does: the model, the loss, the
optimizer's kind, the preprocessing, the data loading, and the versions of
TFF and TensorFlow that build the graphs. Not the learning rates: TFF's
optimizers keep them in the state, which reaches the site as a value (a site
pins those: `policy`).

Imports no TensorFlow at module level: the gatekeeper's process reads the
protocol buffers only.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping

__all__ = ["Fingerprints", "canonical_form", "fingerprint", "function_renames", "site_part"]

_COUNTERS = re.compile(r"^(.*?)((?:_\d+)+)$")


def function_renames(names: list[str]) -> dict[str, str]:
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
    _rename(graph, function_renames([f.signature.name for f in graph.library.function]))
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
    return canonical_form(computation)[0]


def canonical_form(computation) -> tuple[str, dict[int, str]]:
    """The fingerprint, and {cache key id: SHA-256 of that TensorFlow part} for the parts that have one.

    The worker keeps the TensorFlow parts it has compiled by their cache key
    alone; `Fingerprints` uses the second value to refuse a key sent again
    with another graph. A key given to two different graphs in one
    computation maps to "" (never consistent).
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


class CacheKeyReused(ValueError):
    """A computation names a TensorFlow part by a cache key the worker already holds for another part."""


class Fingerprints:
    """The fingerprints of the computations one worker was sent, and the TensorFlow parts it holds by key.

    `form(computation)` returns `canonical_form`'s (fingerprint, keys),
    computed once per distinct serialization. `claim_keys(keys)`, for a
    computation about to be forwarded, raises `CacheKeyReused` if it names a
    TensorFlow part by a cache key this worker already compiled for another
    part: the worker would run the part it holds, not the one approved.
    Thread-safe.
    """

    def __init__(self):
        self._known: dict[bytes, tuple[str, dict[int, str]]] = {}  # sha256 of a computation's bytes -> form
        self._cache_keys: dict[int, str] = {}  # cache key id -> the TensorFlow part the worker compiled for it
        self._lock = threading.Lock()

    def form(self, computation) -> tuple[str, dict[int, str]]:
        raw = computation.SerializeToString()
        digest = hashlib.sha256(raw).digest()
        with self._lock:
            if digest not in self._known:
                self._known[digest] = canonical_form(raw)
            return self._known[digest]

    def claim_keys(self, keys: Mapping[int, str]) -> None:
        """Records the parts a computation about to be forwarded names by cache key; raises CacheKeyReused."""
        with self._lock:
            if any(self._cache_keys.get(key, part) != part or not part for key, part in keys.items()):
                raise CacheKeyReused("it names a TensorFlow part by a cache key that this worker already "
                                     "holds for another one")
            self._cache_keys.update(keys)


def site_part(computation):
    """What a site's worker is sent of `computation`: the part before the merge, as TFF compiles it.

    The kit's `sites.SiteContext` runs `compile_to_mergeable_comp_form(comp)`'s
    `up_to_merge` at each site, through TFF's execution context with TFF's
    native compiler; this returns that computation, compiled the same way.
    """
    import tensorflow_federated as tff

    form = tff.backends.native.compile_to_mergeable_comp_form(computation)
    return tff.backends.native.desugar_and_transform_to_native(form.up_to_merge)
