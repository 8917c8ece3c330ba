"""Your own data in TFF: a source's clients as `tf.data` datasets and a `DataBackend` for ``uri://<client>``.

The rest of `own_data` reads a client's examples as numpy arrays, without
TensorFlow; this module is the thin adapter to the tutorial's programming
model (notebook 02's `DataBackend`, notebook 03's context):

* `client_dataset(source, client_id)`: one client's examples as a
  `tf.data.Dataset` of ``OrderedDict(<features>, label=...)``, one element
  per example, in the source's order.
* `SourceBackend(source, preprocess_fn)`: resolves ``uri://<client id>`` by
  reading that client from the source when a round asks for it (in a thread,
  so that the round's other clients are read meanwhile), then applies
  `preprocess_fn`.
* `element_type(source, preprocess_fn)`: the TFF type of one element after
  `preprocess_fn`, for `tff.framework.CreateDataDescriptor`.

And the other way, for the kit's own data: `write_image_folder` and
`write_table` write the bundled EMNIST sample as PNG images
(``root/<writer>/<label>/<n>.png``) or as a table, which the sources read back
to the same pixels, labels and writers (tests/test_own_data_tff.py).
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tutorial_helpers.own_data.errors import OwnDataError, safe_client_id
from tutorial_helpers.own_data.sources import LABEL, ClientSource
from tutorial_helpers.remote_data import DataBackend

__all__ = ["URI_PREFIX", "SourceBackend", "client_dataset", "client_uris", "element_type", "pixel_columns",
           "write_image_folder", "write_table"]

URI_PREFIX = "uri://"


def client_dataset(source: ClientSource, client_id: str) -> tf.data.Dataset:
    """One client's examples, read from `source` now, as a dataset of ``OrderedDict(features..., label=...)``."""
    examples = source.examples(client_id)
    columns = collections.OrderedDict((name, examples.features[name]) for name in sorted(examples.features))
    columns[LABEL] = examples.labels
    return tf.data.Dataset.from_tensor_slices(columns)


def client_uris(source: ClientSource, client_ids: Sequence[str] | None = None) -> list[str]:
    """``uri://<client id>`` for each of `client_ids` (default: all the source's clients)."""
    return [URI_PREFIX + client for client in (source.client_ids if client_ids is None else client_ids)]


def element_type(source: ClientSource, preprocess_fn: Callable[[tf.data.Dataset], tf.data.Dataset] = lambda d: d
                 ) -> tff.Type:
    """The TFF type of one element of a client's dataset after `preprocess_fn` (read from the first client)."""
    dataset = preprocess_fn(client_dataset(source, source.client_ids[0]))
    return tff.types.tensorflow_to_type(dataset.element_spec)


class SourceBackend(DataBackend):
    """A `DataBackend` that resolves ``uri://<client id>`` to that client's examples in `source`.

    Follows `DataBackend`'s contract: a URI it cannot resolve (another
    scheme, or a client the source does not hold) raises an error that names
    it and the source's clients; it never returns None; it reads in a thread
    (`asyncio.to_thread`), so one slow client does not hold up the others.
    Each resolution reads the client again: the source is the truth, nothing
    is cached.
    """

    def __init__(self, source: ClientSource,
                 preprocess_fn: Callable[[tf.data.Dataset], tf.data.Dataset] = lambda dataset: dataset):
        self.source = source
        self.preprocess_fn = preprocess_fn
        self._known = frozenset(source.client_ids)

    def client_id(self, uri: str) -> str:
        """The client id in ``uri://<client id>``; ValueError naming the URI otherwise."""
        if not uri.startswith(URI_PREFIX):
            raise ValueError(f"{uri!r} is not a client URI: this backend resolves {URI_PREFIX}<client id>, such as "
                             f"{URI_PREFIX}{self.source.client_ids[0]}.")
        client = uri[len(URI_PREFIX):]
        if client not in self._known:
            raise self.source.unknown_client(client, uri)
        return client

    async def materialize(self, data, type_spec):
        client = self.client_id(data.uri)
        examples = await asyncio.to_thread(self.source.examples, client)
        columns = collections.OrderedDict((name, examples.features[name]) for name in sorted(examples.features))
        columns[LABEL] = examples.labels
        return self.preprocess_fn(tf.data.Dataset.from_tensor_slices(columns))


def _clean_folder(root: Path) -> None:
    if root.exists() and any(root.iterdir()):
        raise OwnDataError(f"{root} exists and is not empty: give a new folder, so that nothing is overwritten.")


def write_image_folder(client_data: tff.simulation.datasets.ClientData, client_ids: Sequence[str],
                       root: str | os.PathLike) -> dict[str, int]:
    """Writes the clients' EMNIST digits as ``root/<client>/<label>/<n>.png`` (8-bit grayscale); their counts.

    Pixels in [0, 1] are written as round(pixel * 255): the bundled sample's
    pixels are whole multiples of 1/255, so `ImageFolderSource` reads back
    exactly the same numbers. Refuses a folder that is not empty and a client
    id that is not a safe file name.
    """
    from PIL import Image

    root = Path(root)
    _clean_folder(root)
    counts = {}
    for client in client_ids:
        safe_client_id(client)
        count = 0
        for count, example in enumerate(client_data.create_tf_dataset_for_client(client).as_numpy_iterator(), 1):
            folder = root / client / str(int(example["label"]))
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.round(np.asarray(example["pixels"]) * 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"{count:04d}.png")
        counts[client] = count
    return counts


def write_table(client_data: tff.simulation.datasets.ClientData, client_ids: Sequence[str],
                path: str | os.PathLike) -> int:
    """Writes the clients' EMNIST digits as one table (CSV or Parquet, by the suffix): rows written.

    Columns: ``writer``, ``label``, then ``p0`` ... ``p783`` (the pixels,
    row by row, as float32). `TableSource(path, client_column="writer",
    label_column="label", feature_columns=pixel_columns())` reads it back.
    """
    import pandas as pd

    rows = []
    for client in client_ids:
        for example in client_data.create_tf_dataset_for_client(client).as_numpy_iterator():
            rows.append((client, int(example["label"]), np.asarray(example["pixels"], np.float32).ravel()))
    frame = pd.DataFrame({"writer": [r[0] for r in rows], "label": [r[1] for r in rows]})
    pixels = pd.DataFrame(np.stack([r[2] for r in rows]), columns=pixel_columns())
    frame = pd.concat([frame, pixels], axis=1)
    path = Path(path)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False, float_format="%.9g")  # Nine digits: every float32 reads back exactly.
    else:
        raise OwnDataError(f"{path}: write_table writes .csv or .parquet files; give a path with one of those.")
    return len(frame)


def pixel_columns() -> list[str]:
    """The 784 pixel columns of `write_table`'s table, in row-by-row order."""
    return [f"p{i}" for i in range(784)]
