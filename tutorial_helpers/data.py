"""Federated EMNIST for the kit: the full data set or a bundled real sample.

Both come through TFF's own loader, `tff.simulation.datasets.emnist.load_data`,
which reads `<cache_dir>/emnist_all.sqlite` if it is there and downloads it
otherwise. For the sample, the kit writes that same SQLite file itself, from
99 real writers of LEAF's FEMNIST bundled with the package
(`sample_data/PROVENANCE.md`), and points the loader at it. Nothing in the
loading path is different between the two.

The full data set is downloaded only when asked for by name
(`load_emnist(source="full")`): it is large (see `FULL_DATA_SIZE`).
"""

from __future__ import annotations

import collections
import os
import sqlite3
import tempfile
import urllib.error
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tutorial_helpers import sample

# The original tutorial's preprocessing constants (TFF's repository,
# docs/tutorials/loading_remote_data.ipynb, from 88662d2 to e1fef64, June to
# August 2022, as read at f17a45f).
NUM_EPOCHS = 5
SHUFFLE_BUFFER = 100

SOURCES = ("auto", "full", "sample")
FULL_DATA_URL = "https://storage.googleapis.com/tff-datasets-public/emnist_all.sqlite.lzma"
FULL_DATA_SIZE = "all 3,383 writers' digits and letters, about a gigabyte to download"
_SQLITE_NAME = "emnist_all.sqlite"  # The name TFF's loader looks for.
_SPLITS = {0: "digits_only_train", 1: "digits_only_test"}


def default_cache_dir() -> Path:
    """Where the kit keeps data: $TUTORIAL_HELPERS_CACHE, else ~/.cache/tff-remote-data-kit."""
    if os.environ.get("TUTORIAL_HELPERS_CACHE"):
        return Path(os.environ["TUTORIAL_HELPERS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tff-remote-data-kit"


def _example_proto(pixels: np.ndarray, label: int) -> bytes:
    features = {
        "pixels": tf.train.Feature(float_list=tf.train.FloatList(value=pixels.reshape(-1))),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def _write_sample_sqlite(target: Path) -> None:
    """Writes the bundled sample in the SQLite format of TFF's EMNIST loader, atomically."""
    splits = {name: sample.client_arrays(split) for split, name in _SPLITS.items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".emnist_sample_", suffix=".sqlite")
    os.close(fd)
    try:
        with sqlite3.connect(tmp) as db:
            db.execute(
                "CREATE TABLE examples (split_name TEXT NOT NULL, client_id TEXT NOT NULL, "
                "serialized_example_proto BLOB NOT NULL)"
            )
            db.execute(
                "CREATE TABLE client_metadata (client_id TEXT NOT NULL, split_name TEXT NOT NULL, "
                "num_examples INTEGER NOT NULL)"
            )
            db.executemany(
                "INSERT INTO examples VALUES (?, ?, ?)",
                (
                    (split_name, client_id, _example_proto(pixels, label))
                    for split_name, clients in splits.items()
                    for client_id, arrays in clients.items()
                    for pixels, label in zip(
                        sample.to_tff_pixels(arrays["pixels"]), arrays["label"], strict=True
                    )
                ),
            )
            db.execute(
                "INSERT INTO client_metadata SELECT client_id, split_name, COUNT(*) "
                "FROM examples GROUP BY client_id, split_name ORDER BY client_id"
            )
            db.execute("CREATE INDEX examples_by_client ON examples (client_id, split_name)")
        db.close()
        Path(tmp + ".sha256").write_text(f"{sample.sha256_of(Path(tmp))} {sample.SAMPLE_SHA256}\n")
        os.replace(tmp + ".sha256", str(target) + ".sha256")
        os.replace(tmp, target)
    finally:
        for leftover in (tmp, tmp + ".sha256"):
            if os.path.exists(leftover):
                os.remove(leftover)


def _sample_sqlite_is_valid(path: Path) -> bool:
    checksum_file = Path(str(path) + ".sha256")
    if not (path.is_file() and checksum_file.is_file()):
        return False
    recorded = checksum_file.read_text().split()
    return recorded == [sample.sha256_of(path), sample.SAMPLE_SHA256]


def prepare_sample(cache_dir: str | os.PathLike | None = None) -> Path:
    """Writes the bundled sample as TFF's `emnist_all.sqlite`, once; returns its directory.

    An existing file is reused only if its checksum matches the one recorded
    when it was written (and that of the bundled sample); otherwise it is
    written again.
    """
    directory = Path(cache_dir or default_cache_dir()) / "femnist_sample"
    target = directory / _SQLITE_NAME
    if not _sample_sqlite_is_valid(target):
        _write_sample_sqlite(target)
    return directory


def _shown(path: Path) -> str:
    """`path` as a person writes it, with the home directory as "~"."""
    home = Path.home()
    return f"~/{path.relative_to(home)}" if path.is_relative_to(home) else str(path)


def load_emnist(
    source: str = "auto", cache_dir: str | os.PathLike | None = None, verbose: bool = True
) -> tuple[tff.simulation.datasets.ClientData, tff.simulation.datasets.ClientData]:
    """Returns federated EMNIST digits as TFF `ClientData` (train, test).

    Args:
      source: "sample" for the bundled 99 real writers; "full" for TFF's data
        set (3,383 writers), downloaded once if it is not cached, which is
        large (`FULL_DATA_SIZE`); or "auto": the full set if it is already
        cached, else the sample. Only "full" ever downloads.
      cache_dir: where the data sets are kept: the full one as
        `<cache_dir>/emnist_all.sqlite` (default: TFF's `~/.tff`), the sample
        in `<cache_dir>/femnist_sample/` (default: `default_cache_dir()`).
      verbose: print which source was used and where it lives (and, before a
        download, what is downloaded).

    Raises:
      ValueError: for an unknown `source`.
      ConnectionError: if the full set must be downloaded and cannot be; no
        partial file is left behind.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}.")
    full_dir = Path(cache_dir) if cache_dir else Path.home() / ".tff"
    full_file = full_dir / _SQLITE_NAME
    full_description = "TFF's federated EMNIST digits (3,383 writers)"
    if source == "auto":
        if full_file.is_file():
            source, why = "full", f"cached in {full_dir}"
        else:
            source = "sample"
            why = f'the full data set is not in {full_dir} (source="full" downloads it)'
    else:
        why = "as requested"
    if source == "sample":
        data_dir = prepare_sample(cache_dir)
        if verbose:
            print(
                "EMNIST: the bundled sample of FEMNIST digits (99 writers, from LEAF), "
                f"{why}; file {_shown(data_dir / _SQLITE_NAME)}"
            )
        return tff.simulation.datasets.emnist.load_data(only_digits=True, cache_dir=str(data_dir))
    if full_file.is_file():
        if verbose:
            print(f"EMNIST: {full_description}, {why}; file {_shown(full_file)}")
        return tff.simulation.datasets.emnist.load_data(only_digits=True, cache_dir=str(full_dir))
    if verbose:
        print(
            f"EMNIST: downloading {full_description} from {FULL_DATA_URL} into {full_file}, "
            f"once. It is large: {FULL_DATA_SIZE}."
        )
    try:
        return tff.simulation.datasets.emnist.load_data(only_digits=True, cache_dir=str(full_dir))
    except BaseException as e:
        # TFF writes the file in place as it downloads: a partial one would
        # later pass for the cached data set.
        full_file.unlink(missing_ok=True)
        if isinstance(e, (urllib.error.URLError, OSError)):
            raise ConnectionError(
                f"Could not download the full EMNIST data set from {FULL_DATA_URL} "
                f"({getattr(e, 'reason', e)}). Use load_emnist(source=\"sample\") for the "
                f"bundled sample, or put TFF's {_SQLITE_NAME} into {full_dir}."
            ) from e
        raise


def preprocess(
    dataset: tf.data.Dataset,
    num_epochs: int = NUM_EPOCHS,
    shuffle_buffer: int = SHUFFLE_BUFFER,
    seed: int = 1,
) -> tf.data.Dataset:
    """The original tutorial's preprocessing of one client's EMNIST examples.

    Repeats the examples `num_epochs` times, shuffles them, flattens each
    28x28 image to 784 values and renames the features for Keras: every
    element is ``OrderedDict(x=float32[1, 784], y=int32[1, 1])``, a batch of
    one example. Notebook 01 builds it; `tests/test_one_source.py` keeps the
    two the same code.
    """

    def map_fn(element):
        return collections.OrderedDict(
            x=tf.reshape(element["pixels"], [-1, 784]),
            y=tf.reshape(element["label"], [-1, 1]),
        )

    return dataset.repeat(num_epochs).shuffle(shuffle_buffer, seed=seed).map(map_fn)


def client_dataset(client_data: tff.simulation.datasets.ClientData, index: int) -> tf.data.Dataset:
    """Returns the preprocessed dataset of the `index`-th client (0-based, sorted ids).

    Raises IndexError naming the valid range if there is no such client.
    """
    client_ids = client_data.client_ids
    if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
        raise TypeError(f"client index must be an int, got {index!r}.")
    if not 0 <= index < len(client_ids):
        raise IndexError(
            f"There is no client {index}: this data has {len(client_ids)} clients, "
            f"indices 0 to {len(client_ids) - 1}."
        )
    return preprocess(client_data.create_tf_dataset_for_client(client_ids[index]))
