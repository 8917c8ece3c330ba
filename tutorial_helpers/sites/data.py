"""A site's data on disk: its root, one file per client, and the catalogue the controller sees.

`write_site` writes each client's raw examples into the site's root
(`clients/<id>.tfrecord`, every record marked with the site's canary) and
`catalogue.json` (client ids and example counts, all the controller needs).
A site's worker runs with its root as working directory, and
`site_dataset_computation` reads `clients/<id>.tfrecord` by that relative
path, so each worker opens only its own site's files and the controller
sends only ids. `build_site_fed_avg` composes it with the tutorial's
Federated Averaging, with TFF's
`tff.simulation.compose_dataset_computation_with_learning_process`.

Where the kit runs as root, `write_site(owner=...)` gives a site's root to a
user account of its own, whose worker (`SiteWorker(user=...)`) alone can
read it. As one ordinary user, the sites' files are apart by convention only.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tutorial_helpers import data as kit_data
from tutorial_helpers import model

__all__ = ["CATALOGUE", "CLIENTS_FOLDER", "build_site_dp_fed_avg", "build_site_fed_avg", "build_site_fed_eval",
           "client_file", "dp_fed_avg_computations", "example_probes", "fed_avg_computations", "read_catalogue",
           "read_features", "site_dataset_computation", "write_site"]

CLIENTS_FOLDER = "clients"  # In a site's root; a client's file is clients/<id>.tfrecord.
CATALOGUE = "catalogue.json"


def client_file(client_id: str) -> str:
    """Where a site keeps a client's examples, relative to its root."""
    return f"{CLIENTS_FOLDER}/{client_id}.tfrecord"


_FEATURES = {"label": tf.io.FixedLenFeature([1], tf.int64), "pixels": tf.io.FixedLenFeature([784], tf.float32)}


def _examples(client_data, client_id: str):
    """The client's examples as {feature: numpy value}, from a TFF ClientData or an `own_data` source."""
    if hasattr(client_data, "create_tf_dataset_for_client"):
        yield from client_data.create_tf_dataset_for_client(client_id).as_numpy_iterator()
        return
    examples = client_data.examples(client_id)  # An own_data.ClientSource: numpy arrays, one row per example.
    if "label" in examples.features:
        raise ValueError(f"Client {client_id!r}: a feature is named 'label', the name of the labels; rename it.")
    for i in range(len(examples)):
        yield {**{name: values[i] for name, values in examples.features.items()}, "label": examples.labels[i]}


def _feature(name: str, value) -> tuple[tf.train.Feature, dict]:
    """A value as a tf.train.Feature, and what the catalogue says of its kind: {"dtype", "shape"}.

    float16 and float32 are kept exactly (as 32-bit floats), integers and
    booleans as 64-bit integers, text and bytes as bytes; anything else
    (float64, which 32-bit floats would round, or a column of mixed Python
    objects) is refused, naming the feature.
    """
    array = np.asarray(value)
    if name == "canary":
        raise ValueError("A feature is named 'canary', the name of the site's mark in every record; rename it.")
    kind = array.dtype.kind
    if kind == "O" and all(isinstance(v, str | bytes) for v in array.ravel()):
        kind = "U"
    described = {"dtype": array.dtype.name if kind in "fiub" else "string", "shape": list(array.shape)}
    if kind == "f" and array.dtype.itemsize <= 4:
        return tf.train.Feature(float_list=tf.train.FloatList(value=array.ravel())), described
    if kind in "iub":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=array.ravel().astype(np.int64))), described
    if kind in "US":
        flat = [v if isinstance(v, bytes) else str(v).encode() for v in array.ravel()]
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=flat)), described
    raise ValueError(f"Feature {name!r} is {array.dtype} ({array.ravel()[:1]!r}...): a site keeps float32, "
                     "integers, booleans and text. Convert it first (float64 to float32; a column of mixed values "
                     "to one kind).")


def write_site(client_data, client_ids: Sequence[str], root: str | os.PathLike, *, canary: bytes,
               owner: str | None = None) -> dict[str, int]:
    """Writes the raw examples of `client_ids` into a site's `root`; returns each client's count.

    `client_data` is a TFF ClientData (EMNIST's, or any whose elements are
    dicts of arrays) or a source of `tutorial_helpers.own_data` (a table, an
    image folder, a database). One TFRecord file per client,
    `clients/<id>.tfrecord`, in the order `client_data` gives the examples;
    every record also carries `canary`, the site's mark, which the pipeline
    ignores and an audit of the traffic looks for. `catalogue.json` lists the
    clients and their counts, and each feature's dtype and shape
    (`read_features`), which `site_dataset_computation` needs for data other
    than EMNIST.

    All or nothing: each id must be a safe file name (letters, digits and _),
    `root` must be new or empty, and the site is written into a folder beside
    it that becomes `root` only once complete; a failure (a bad example, a
    full disk) leaves no site folder behind. The root and its folder are
    readable by their owner only (mode 0700); with `owner` (root only), the
    user account that runs the site's worker, everything is then given to
    that user, so that other users cannot read the examples.
    """
    from tutorial_helpers.own_data.errors import safe_client_id

    root = Path(root)
    for client_id in client_ids:
        safe_client_id(client_id)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not empty: a site is written into a new or empty folder, so "
                              "that no earlier site's files are mixed in. Remove it, or give another folder.")
    root.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))  # Mode 0700.
    try:
        folder = partial / CLIENTS_FOLDER
        folder.mkdir(mode=0o700)
        counts, kinds = {}, None
        for client_id in client_ids:
            count = 0
            with tf.io.TFRecordWriter(str(partial / client_file(client_id))) as writer:
                for example in _examples(client_data, client_id):
                    features, described = {}, {}
                    for name, value in example.items():
                        features[name], described[name] = _feature(name, value)
                    if kinds is None:
                        kinds = described
                    elif described != kinds:
                        raise ValueError(f"Client {client_id!r}, example {count}: its features {described} differ "
                                         f"from the first example's {kinds}; a site's examples share one kind.")
                    features["canary"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[canary]))
                    writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())
                    count += 1
            counts[client_id] = count
        (partial / CATALOGUE).write_text(json.dumps({"clients": counts, "features": kinds or {}}, indent=1) + "\n")
        if owner is not None:  # Given away before the rename: the site appears whole, and already its owner's.
            import pwd

            account = pwd.getpwnam(owner)
            for path in (partial, folder, partial / CATALOGUE, *folder.iterdir()):
                os.chown(path, account.pw_uid, account.pw_gid)
            for path in (partial / CATALOGUE, *folder.iterdir()):
                path.chmod(0o600)
        os.replace(partial, root)  # Replaces an empty root; a reader sees no site or the whole site.
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return counts


def read_catalogue(root: str | os.PathLike) -> dict[str, int]:
    """A site's catalogue: its client ids and how many examples each holds (no example)."""
    return dict(json.loads((Path(root) / CATALOGUE).read_text())["clients"])


def read_features(root: str | os.PathLike) -> dict[str, dict]:
    """What a site's examples hold, from its catalogue: {feature: {"dtype": ..., "shape": [...]}} (no example).

    Pass it to `site_dataset_computation(features=...)` for data other than
    EMNIST. A catalogue written before features were recorded gives {}.
    """
    return dict(json.loads((Path(root) / CATALOGUE).read_text()).get("features", {}))


def example_probes(client_data: tff.simulation.datasets.ClientData, client_ids: Sequence[str], *,
                   per_client: int = 2, floats: int = 16) -> tuple[bytes, ...]:
    """Short runs of raw example bytes, for an audit to look for in the traffic (`ChannelAudit`).

    For each client, `per_client` of its examples (its first, then evenly
    spread), and in each the run of `floats` consecutive pixels (as 32-bit
    little-endian floats, how TensorFlow's tensors and `tf.train.Example`
    store them) that holds the most distinct values, so that it is not blank
    paper (1.0) that any message might hold. A message that carries such an
    example as a record or as a tensor, before or after preprocessing
    (which reshapes, batches and relabels but keeps the pixels), contains it.
    What the site would give an auditor: the controller never needs it.
    """
    import numpy as np

    probes = []
    for client_id in client_ids:
        examples = list(client_data.create_tf_dataset_for_client(client_id).as_numpy_iterator())
        for index in np.linspace(0, len(examples) - 1, min(per_client, len(examples))).astype(int):
            pixels = np.asarray(examples[index]["pixels"], dtype="<f4").ravel()
            windows = np.lib.stride_tricks.sliding_window_view(pixels, floats)
            best = max(range(len(windows)), key=lambda i: len(np.unique(windows[i])))
            probes.append(windows[best].tobytes())
    return tuple(probes)


def _parser(features: dict[str, dict] | None):
    """The function from a record to one example: EMNIST's (`label`, `pixels` 28x28), or `features`' (catalogue)."""
    if not features:  # EMNIST's, also for a catalogue written before features were recorded.
        def parse(record):
            example = tf.io.parse_single_example(record, _FEATURES)
            return collections.OrderedDict(label=tf.cast(example["label"][0], tf.int32),
                                           pixels=tf.reshape(example["pixels"], [28, 28]))

        return parse
    spec = {}  # name: (how the record stores it, its dtype, its shape)
    for name, kind in sorted(features.items()):
        dtype = tf.string if kind["dtype"] == "string" else tf.as_dtype(kind["dtype"])
        stored = tf.string if dtype == tf.string else tf.float32 if dtype.is_floating else tf.int64
        spec[name] = (stored, dtype, [int(d) for d in kind["shape"]])
    wanted = {name: tf.io.FixedLenFeature([int(np.prod(shape))], stored) for name, (stored, _, shape) in spec.items()}

    def parse(record):
        read = tf.io.parse_single_example(record, wanted)
        return collections.OrderedDict(
            (name, tf.reshape(read[name] if dtype == stored else tf.cast(read[name], dtype), shape))
            for name, (stored, dtype, shape) in spec.items())

    return parse


def site_dataset_computation(
    preprocess_fn: Callable[[tf.data.Dataset], tf.data.Dataset] = kit_data.preprocess,
    features: dict[str, dict] | None = None,
) -> tff.Computation:
    """A computation from a client id to its dataset, read by a RELATIVE path at the worker.

    Run in a worker whose working directory is a site's root, it opens that
    site's `clients/<id>.tfrecord`; the elements are those of TFF's EMNIST
    (`label`, `pixels` 28x28), or, with `features` (`read_features` of a
    site written from other data), an OrderedDict of those features with
    their dtypes and shapes; then `preprocess_fn`. An id that is not letters,
    digits and `_` (a path such as `../clinic/clients/x`) fails at the site,
    so an approved computation cannot be pointed at another folder.
    """
    parse = _parser(features)

    @tff.tensorflow.computation(tf.string)
    def dataset_for(client_id):
        # An id is letters, digits and _ only: "../other-site/clients/x" must not reach another folder.
        checked = tf.debugging.Assert(tf.strings.regex_full_match(client_id, "[A-Za-z0-9_]+"),
                                      ["Not a client id (letters, digits and _ only):", client_id])
        with tf.control_dependencies([checked]):
            path = tf.strings.join([CLIENTS_FOLDER + "/", client_id, ".tfrecord"])  # client_file(client_id)
        return preprocess_fn(tf.data.TFRecordDataset(path).map(parse))

    return dataset_for


def build_site_fed_avg(client_learning_rate: float = 0.02, server_learning_rate: float = 1.0):
    """Federated Averaging whose clients are ids, each client's data loaded at its site (notebook 07's)."""
    return tff.simulation.compose_dataset_computation_with_learning_process(
        site_dataset_computation(), model.build_fed_avg(client_learning_rate, server_learning_rate))


def _norm_in_state(clipping_norm: float) -> tff.templates.EstimationProcess:
    """A clipping norm that stays as it is, kept in the round's state (so a site can pin it), not in the graph."""
    init_fn = tff.federated_computation(lambda: tff.federated_value(np.float32(clipping_norm), tff.SERVER))
    next_fn = tff.federated_computation(lambda state, norm: state, init_fn.type_signature.result,
                                        tff.FederatedType(np.float32, tff.CLIENTS))
    report_fn = tff.federated_computation(lambda state: state, init_fn.type_signature.result)
    return tff.templates.EstimationProcess(init_fn, next_fn, report_fn)


def build_site_dp_fed_avg(clipping_norm: float = 0.5, clients_per_round: int = 10,
                          client_learning_rate: float = 0.02, server_learning_rate: float = 1.0):
    """Federated Averaging whose each client's update is clipped at its site, for a site that adds noise.

    Unweighted: each client's update (its model's change) is clipped to L2
    norm `clipping_norm`, inside the computation, at the site; the round
    sums them (`tff.aggregators.clipping_factory` around a sum), and the
    server divides the sum by `clients_per_round` and applies it with
    `server_learning_rate`. The norm is in the round's state
    (``aggregator.clipping_norm``), where the site pins it
    (`python -m tutorial_helpers.gatekeeper pin FOLDER clipping_norm=0.5`),
    so a controller cannot send another; the site's gatekeeper then adds
    its noise to its partial sum (`gatekeeper.release`). Clients are ids,
    each client's data loaded at its site, as in `build_site_fed_avg`.
    """
    process = tff.learning.algorithms.build_unweighted_fed_avg(
        model.model_fn,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=client_learning_rate),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=server_learning_rate / clients_per_round),
        model_aggregator=tff.aggregators.clipping_factory(_norm_in_state(clipping_norm),
                                                          tff.aggregators.SumFactory()))
    return tff.simulation.compose_dataset_computation_with_learning_process(site_dataset_computation(), process)


def dp_fed_avg_computations() -> dict[str, tff.Computation]:
    """What a site approves to take part in training whose updates it clips and noises (notebook 09).

    ``python -m tutorial_helpers.gatekeeper approve FOLDER tutorial_helpers.sites:dp_fed_avg_computations``
    Any clipping norm, client count or learning rate builds the same
    computation: they are in its state, not its graph.
    """
    return {"Federated Averaging round, each client's update clipped at the state's aggregator.clipping_norm "
            "(sites.build_site_dp_fed_avg)": build_site_dp_fed_avg().next}


def build_site_fed_eval():
    """Federated evaluation of the tutorial's model over client ids, each loaded at its site."""
    return tff.simulation.compose_dataset_computation_with_learning_process(
        site_dataset_computation(), tff.learning.algorithms.build_fed_eval(model.model_fn))


def fed_avg_computations() -> dict[str, tff.Computation]:
    """What a site approves to take part in notebook 07's training and evaluation.

    ``python -m tutorial_helpers.gatekeeper approve FOLDER tutorial_helpers.sites:fed_avg_computations``
    """
    return {"Federated Averaging round (sites.build_site_fed_avg; learning rates come in the state)":
            build_site_fed_avg().next,
            "federated evaluation (sites.build_site_fed_eval)": build_site_fed_eval().next}
