"""Tests of tutorial_helpers.data: the EMNIST sample through TFF's own loader."""

import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tutorial_helpers import data, sample


def test_sample_comes_through_tffs_loader_with_all_writers(emnist):
    train, test = emnist
    assert type(train).__name__ == "PreprocessClientData"  # What TFF's load_data returns.
    assert len(train.client_ids) == 99
    assert len(test.client_ids) == 98  # One writer has no test digits (PROVENANCE.md).
    assert train.client_ids == sorted(train.client_ids)
    spec = train.element_type_structure
    assert spec["pixels"] == tf.TensorSpec([28, 28], tf.float32)
    assert spec["label"] == tf.TensorSpec([], tf.int32)


def test_sample_holds_the_real_digits_of_the_bundled_file(emnist):
    train, test = emnist
    arrays = np.load(sample.sample_path())
    n_train = sum(len(list(train.create_tf_dataset_for_client(c))) for c in train.client_ids)
    n_test = sum(len(list(test.create_tf_dataset_for_client(c))) for c in test.client_ids)
    assert (n_train, n_test) == (9369, 1062)
    # The first example of the first writer, pixel for pixel.
    writer = train.client_ids[0]
    writer_index = list(arrays["writer_ids"]).index(writer)
    rows = np.flatnonzero((arrays["writer"] == writer_index) & (arrays["split"] == 0))
    expected = {
        (int(arrays["label"][i]), arrays["pixels"][i].astype(np.float32).tobytes()) for i in rows
    }
    example = next(iter(train.create_tf_dataset_for_client(writer)))
    pixels = np.round(example["pixels"].numpy() * 255).astype(np.float32)
    assert (int(example["label"]), pixels.tobytes()) in expected
    assert 0.0 <= float(tf.reduce_min(example["pixels"])) <= float(tf.reduce_max(example["pixels"])) <= 1.0


def test_sample_is_written_once_and_rewritten_when_corrupt(tmp_path, capsys):
    directory = data.prepare_sample(tmp_path)
    sqlite = directory / "emnist_all.sqlite"
    first = sqlite.stat().st_mtime_ns
    assert data.prepare_sample(tmp_path) == directory
    assert sqlite.stat().st_mtime_ns == first  # Reused, not rewritten.
    with open(sqlite, "r+b") as f:  # Corrupt one byte in the middle.
        f.seek(sqlite.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert not data._sample_sqlite_is_valid(sqlite)
    data.prepare_sample(tmp_path)
    assert data._sample_sqlite_is_valid(sqlite)
    assert not list(directory.glob(".emnist_sample_*"))  # No temporary files left.


def test_a_corrupt_bundled_sample_is_refused_with_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setattr(sample, "SAMPLE_SHA256", "0" * 64)
    with pytest.raises(ValueError, match=r"femnist_digits_sample.npz is corrupt: its SHA-256"):
        data.prepare_sample(tmp_path)


def test_auto_never_downloads_the_full_set(tmp_path, capsys):
    """Only source="full" may start the large download; "auto" falls back to the sample."""
    train, _ = data.load_emnist(source="auto", cache_dir=tmp_path)
    message = capsys.readouterr().out
    assert "bundled sample" in message and 'source="full" downloads it' in message
    assert len(train.client_ids) == 99
    assert not (tmp_path / "emnist_all.sqlite").exists()


def test_paths_are_shown_with_the_home_directory_as_a_tilde():
    assert data._shown(Path.home() / ".cache" / "x.sqlite") == "~/.cache/x.sqlite"
    assert data._shown(Path("/opt/x.sqlite")) == "/opt/x.sqlite"


def test_auto_uses_the_full_set_when_it_is_cached(tmp_path, capsys):
    sample_dir = data.prepare_sample(tmp_path / "elsewhere")
    os.symlink(sample_dir / "emnist_all.sqlite", tmp_path / "emnist_all.sqlite")
    data.load_emnist(source="auto", cache_dir=tmp_path)
    message = capsys.readouterr().out
    assert f"TFF's federated EMNIST digits (3,383 writers), cached in {tmp_path}" in message


def test_unknown_source_is_rejected():
    with pytest.raises(ValueError, match=r"source must be one of \('auto', 'full', 'sample'\), got 'ful'"):
        data.load_emnist(source="ful")


def test_preprocess_is_the_original_tutorials_pipeline():
    raw = tf.data.Dataset.from_tensor_slices(
        {"pixels": np.arange(3 * 28 * 28, dtype=np.float32).reshape(3, 28, 28), "label": np.int32([7, 8, 9])}
    )
    processed = data.preprocess(raw, num_epochs=4)
    assert processed.element_spec["x"] == tf.TensorSpec([1, 784], tf.float32)
    assert processed.element_spec["y"] == tf.TensorSpec([1, 1], tf.int32)
    elements = list(processed.as_numpy_iterator())
    assert len(elements) == 12
    assert sorted(int(e["y"][0, 0]) for e in elements) == [7] * 4 + [8] * 4 + [9] * 4
    for e in elements:  # Each image is flattened row by row, labels stay with their image.
        label = int(e["y"][0, 0])
        np.testing.assert_array_equal(e["x"][0], np.arange(784) + (label - 7) * 784)
    # The shuffle is seeded: the same order every time.
    assert [int(e["y"][0, 0]) for e in data.preprocess(raw, num_epochs=4).as_numpy_iterator()] == [
        int(e["y"][0, 0]) for e in elements
    ]


def test_client_dataset_indexes_sorted_clients_and_rejects_bad_indices(emnist):
    train, _ = emnist
    dataset = data.client_dataset(train, 98)
    expected = len(list(train.create_tf_dataset_for_client(train.client_ids[98])))
    assert len(list(dataset)) == expected * data.NUM_EPOCHS
    with pytest.raises(IndexError, match="There is no client 99: this data has 99 clients, indices 0 to 98"):
        data.client_dataset(train, 99)
    with pytest.raises(IndexError, match="no client -1"):
        data.client_dataset(train, -1)
    with pytest.raises(TypeError, match="client index must be an int, got '3'"):
        data.client_dataset(train, "3")
    with pytest.raises(TypeError, match="got True"):
        data.client_dataset(train, True)


def no_network(*args, **kwargs):
    raise AssertionError("load_emnist opened a URL it was not asked to")


def test_only_full_opens_a_url(monkeypatch, tmp_path, capsys):
    import urllib.request

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    for source in ("auto", "sample"):
        train, _ = data.load_emnist(source=source, cache_dir=tmp_path)
        assert len(train.client_ids) == 99
    assert not (tmp_path / "emnist_all.sqlite").exists()


class BrokenDownload:
    """A response that delivers one chunk of TFF's LZMA file, then loses the connection."""

    headers = {"content-length": "1000000000"}

    def __init__(self):
        import lzma

        self.chunks = [lzma.compress(b"SQLite format 3\0" + bytes(5000))[:2000]]

    def read(self, size):
        if self.chunks:
            return self.chunks.pop()
        raise ConnectionResetError("connection reset by peer")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


def test_a_failed_full_download_says_what_it_was_and_leaves_no_partial_file(monkeypatch, tmp_path, capsys):
    import urllib.request

    monkeypatch.setattr(urllib.request, "urlopen", lambda *args, **kwargs: BrokenDownload())
    with pytest.raises(ConnectionError, match=r'connection reset by peer.*source="sample"') as raised:
        data.load_emnist(source="full", cache_dir=tmp_path)
    assert isinstance(raised.value.__cause__, ConnectionResetError)
    message = capsys.readouterr().out
    assert "EMNIST: downloading TFF's federated EMNIST digits (3,383 writers)" in message
    assert f"It is large: {data.FULL_DATA_SIZE}." in message
    # TFF wrote the first chunk in place; a partial file would pass for the data set later.
    assert not (tmp_path / "emnist_all.sqlite").exists()
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    train, _ = data.load_emnist(source="auto", cache_dir=tmp_path)
    assert "bundled sample" in capsys.readouterr().out


def test_default_cache_dir_follows_the_variables_a_learner_may_set(monkeypatch, tmp_path):
    from tutorial_helpers.data import default_cache_dir

    monkeypatch.delenv("TUTORIAL_HELPERS_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "tff-remote-data-kit"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "tff-remote-data-kit"
    monkeypatch.setenv("TUTORIAL_HELPERS_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.setenv("TUTORIAL_HELPERS_CACHE", "")  # Empty counts as unset.
    assert default_cache_dir() == tmp_path / "xdg" / "tff-remote-data-kit"
