"""Your own data as clients (tutorial_helpers.own_data): tables, image folders, SQLite, partitioners, describe.

Every expected value is computed here from the data by other means (a
boolean mask over the DataFrame, the csv module, Pillow), never by the code
under test. PostgreSQL is in test_own_data_postgres.py.
"""

import ast
import csv
import functools
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

# Imported here, not in a test: numpy.testing runs lscpu when first imported, a process the fast tier forbids.
from numpy.testing import assert_array_equal

from tutorial_helpers import own_data
from tutorial_helpers.own_data import partition
from tutorial_helpers.own_data.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
PENGUINS = ROOT / "tutorial_helpers" / "sample_data" / "penguins-raw.csv"
FEATURES = ["f0", "f1"]


def table(num_rows: int = 60, seed: int = 0) -> pd.DataFrame:
    """Rows of 6 clients in shuffled order (not grouped), 3 text labels, 2 numeric features."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"writer": rng.choice([f"w{i}" for i in range(6)], num_rows),
                         "label": rng.choice(["cat", "dog", "eel"], num_rows),
                         "f0": rng.normal(size=num_rows).round(3), "f1": rng.integers(0, 100, num_rows)})


def expected(frame: pd.DataFrame, client: str, vocabulary: list) -> tuple[dict, list]:
    rows = frame[frame["writer"] == client]
    return {name: rows[name].to_numpy(np.float32) for name in FEATURES}, [vocabulary.index(v) for v in rows["label"]]


def written(frame: pd.DataFrame, folder: Path) -> dict:
    """The same table as a DataFrame, a CSV file, a Parquet file (row groups of 7 rows) and a SQLite table."""
    frame.to_csv(folder / "t.csv", index=False)
    frame.to_parquet(folder / "t.parquet", row_group_size=7)
    engine = sa.create_engine(f"sqlite:///{folder / 't.db'}")
    own_data.write_sql_table(frame, engine, "examples")
    options = {"label_column": "label", "feature_columns": FEATURES}
    return {"frame": own_data.TableSource(frame, client_column="writer", **options),
            "csv": own_data.TableSource(folder / "t.csv", client_column="writer", **options),
            "parquet": own_data.TableSource(folder / "t.parquet", client_column="writer", **options),
            "sqlite": own_data.SqlSource(engine, "examples", client_column="writer", **options)}


# --- the module imports no TensorFlow ---------------------------------------------------------------------------


@pytest.mark.process
def test_importing_own_data_and_its_command_imports_no_tensorflow():
    code = ("import sys, tutorial_helpers.own_data, tutorial_helpers.own_data.__main__, "
            "tutorial_helpers.own_data.postgres; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'tensorflow_federated')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


# --- tables ------------------------------------------------------------------------------------------------------


def test_a_dataframe_a_csv_a_parquet_file_and_sqlite_give_each_client_its_own_rows(tmp_path):
    frame = table()
    vocabulary = sorted(frame["label"].unique())
    for kind, source in written(frame, tmp_path).items():
        assert source.client_ids == tuple(sorted(frame["writer"].unique())), kind
        assert source.labels.values == tuple(vocabulary), kind
        for client in source.client_ids:
            features, labels = expected(frame, client, vocabulary)
            got = source.examples(client)
            assert got.labels.dtype == np.int32 and got.labels.tolist() == labels, (kind, client)
            for name in FEATURES:
                assert got.features[name].dtype == np.float32, (kind, name)
                assert_array_equal(got.features[name], features[name], err_msg=f"{kind} {client}")


def test_element_spec_states_each_examples_dtype_and_shape(tmp_path):
    source = written(table(), tmp_path)["csv"]
    got = source.examples(source.client_ids[0])
    arrays = {**got.features, "label": got.labels}
    assert set(source.element_spec) == set(arrays) == {"f0", "f1", "label"}
    for name, spec in source.element_spec.items():
        assert (arrays[name].dtype, arrays[name].shape[1:]) == (spec.dtype, spec.shape)


def test_a_csv_client_is_read_by_byte_offsets_through_quoted_line_breaks_and_blank_lines(tmp_path):
    path = tmp_path / "notes.csv"
    path.write_text('writer,note,label,f0\n'
                    'a,"one, with a comma",x,1\n'
                    '\n'
                    'b,"two\nlines ""quoted""",y,2\n'
                    'a,plain,y,3\n'
                    'b,"",x,4')  # No line end at the end of the file.
    source = own_data.TableSource(path, client_column="writer", label_column="label", feature_columns=["f0"])
    by_pandas = pd.read_csv(path)
    for client in ("a", "b"):
        assert_array_equal(source.examples(client).features["f0"],
                                      by_pandas.loc[by_pandas["writer"] == client, "f0"].to_numpy(np.float32))
    assert source.labels.decode(source.examples("b").labels) == ["y", "x"]


def test_a_site_column_names_each_clients_site_and_a_client_at_two_sites_is_refused():
    frame = pd.DataFrame({"writer": ["a", "a", "b", "c"], "site": ["s1", "s1", "s2", "s1"], "label": [0, 1, 0, 1]})
    source = own_data.TableSource(frame, client_column="writer", label_column="label", site_column="site")
    assert source.sites() == {"s1": ("a", "c"), "s2": ("b",)}
    frame.loc[1, "site"] = "s2"
    with pytest.raises(own_data.ColumnError, match=r"client 'a' has rows at sites \['s1', 's2'\]"):
        own_data.TableSource(frame, client_column="writer", label_column="label", site_column="site")


def test_integer_labels_keep_their_order_whatever_their_type():
    frame = pd.DataFrame({"writer": ["a"] * 4, "label": ["10", "2", "0", "2"]})
    source = own_data.TableSource(frame, client_column="writer", label_column="label")
    assert source.labels.values == (0, 2, 10)
    assert source.examples("a").labels.tolist() == [2, 1, 0, 1]


# --- bad tables --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["client_column", "label_column"])
def test_a_missing_client_or_label_column_names_the_file_the_column_and_the_columns_there_are(tmp_path, role):
    table().to_csv(tmp_path / "t.csv", index=False)
    arguments = {"client_column": "writer", "label_column": "label", role: "person"}
    with pytest.raises(own_data.ColumnError) as error:
        own_data.TableSource(tmp_path / "t.csv", **arguments)
    message = str(error.value)
    assert f"{tmp_path / 't.csv'} has no column 'person' ({role})" in message
    assert "'writer', 'label', 'f0', 'f1'" in message and f"pass one of those as {role}" in message


def test_a_label_not_seen_in_training_names_the_value_and_its_line_and_the_training_map_fixes_the_indices(tmp_path):
    train = own_data.TableSource(pd.DataFrame({"writer": ["a", "a", "b"], "label": ["cat", "dog", "eel"]}),
                                 client_column="writer", label_column="label")
    (tmp_path / "test.csv").write_text("writer,label\nc,eel\nc,dog\nd,fox\n")
    with pytest.raises(own_data.UnknownLabelError) as error:
        own_data.TableSource(tmp_path / "test.csv", client_column="writer", label_column="label", labels=train.labels)
    message = str(error.value)
    assert f"{tmp_path / 'test.csv'}, line 4 (row 3 after the header): label 'fox' was not seen" in message
    assert "'cat', 'dog', 'eel'" in message and "labels=train_source.labels" in message
    (tmp_path / "test.csv").write_text("writer,label\nc,eel\nc,dog\n")
    test = own_data.TableSource(tmp_path / "test.csv", client_column="writer", label_column="label",
                                labels=train.labels)
    assert test.examples("c").labels.tolist() == [2, 1]  # Training's indices, though the test set has no 'cat'.
    alone = own_data.TableSource(tmp_path / "test.csv", client_column="writer", label_column="label")
    assert alone.examples("c").labels.tolist() == [1, 0]  # The control: its own map numbers them otherwise.


def test_a_non_numeric_feature_names_the_column_the_first_bad_line_and_its_value(tmp_path):
    (tmp_path / "t.csv").write_text("writer,label,f0\na,0,1.5\nb,1,2\na,1,ten\na,0,eleven\n")
    source = own_data.TableSource(tmp_path / "t.csv", client_column="writer", label_column="label",
                                  feature_columns=["f0"])
    assert source.examples("b").features["f0"].tolist() == [2.0]  # Only client a's rows are bad.
    with pytest.raises(own_data.FeatureValueError) as error:
        source.examples("a")
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 't.csv'}, line 4 (row 3 after the header): column 'f0' holds 'ten', "
                              "which is not a number")
    assert "leave it out of feature_columns" in message


def test_a_missing_feature_value_in_a_dataframe_names_its_row_and_index():
    frame = pd.DataFrame({"writer": ["a", "a"], "label": [0, 1], "f0": [1.0, None]}, index=[10, 20])
    source = own_data.TableSource(frame, client_column="writer", label_column="label", feature_columns=["f0"])
    with pytest.raises(own_data.FeatureValueError, match=r"the DataFrame, row 2 \(index 20\): column 'f0' has no "
                                                          r"value\. Drop the rows with missing values"):
        source.examples("a")


def test_a_client_with_no_rows_names_the_client_the_file_and_some_clients_that_exist(tmp_path):
    source = written(table(), tmp_path)["csv"]
    with pytest.raises(own_data.EmptyClientError) as error:
        source.examples("w99")
    assert str(error.value).startswith(f"{tmp_path / 't.csv'}: client 'w99' has no rows. The source's clients are "
                                       "['w0', 'w1', 'w2', 'w3', 'w4', ...] (6)")


def test_a_partitioner_that_leaves_a_client_empty_is_refused_with_what_to_change():
    frame = pd.DataFrame({"label": [0, 1, 2, 3]})
    def empty_last(labels):
        return {"client_0": np.arange(len(labels)), "client_1": np.array([], dtype=np.int64)}

    with pytest.raises(own_data.EmptyClientError, match="the partitioner gave client 'client_1' no rows"):
        own_data.TableSource(frame, label_column="label", partitioner=empty_last)


def test_a_csv_with_a_header_only_and_an_empty_file_say_so(tmp_path):
    (tmp_path / "header.csv").write_text("writer,label,f0\n")
    with pytest.raises(own_data.OwnDataError, match=re.escape(f"{tmp_path / 'header.csv'} has a header and no rows")):
        own_data.TableSource(tmp_path / "header.csv", client_column="writer", label_column="label")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(own_data.OwnDataError, match=re.escape(f"{tmp_path / 'empty.csv'} is empty: a CSV file "
                                                              "needs a header line")):
        own_data.TableSource(tmp_path / "empty.csv", client_column="writer", label_column="label")


def test_giving_both_or_neither_of_client_column_and_partitioner_is_refused():
    frame = table()
    for arguments in ({}, {"client_column": "writer", "partitioner": functools.partial(partition.iid, num_clients=2,
                                                                                       seed=0)}):
        with pytest.raises(own_data.OwnDataError, match="give exactly one of client_column"):
            own_data.TableSource(frame, label_column="label", **arguments)


# --- images ------------------------------------------------------------------------------------------------------


def save_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def image_tree(root: Path, clients=("alice", "bob"), labels=(0, 1), per_label=2, seed=0) -> dict:
    """root/<client>/<label>/<i>.png, grayscale 5 wide x 4 high; returns {client: [(pixels, label)]} in file order."""
    rng = np.random.default_rng(seed)
    made = {}
    for client in clients:
        for label in labels:
            for i in range(per_label):
                pixels = rng.integers(0, 256, (4, 5), dtype=np.uint8)
                save_png(root / client / str(label) / f"{i}.png", pixels)
                made.setdefault(client, []).append((pixels, label))
    return made


def test_an_image_folder_per_client_gives_each_clients_pixels_and_labels(tmp_path):
    made = image_tree(tmp_path)
    source = own_data.ImageFolderSource(tmp_path)
    assert source.client_ids == ("alice", "bob")
    assert source.element_spec["pixels"] == (np.dtype(np.float32), (4, 5))
    for client, examples in made.items():
        got = source.examples(client)
        assert_array_equal(got.features["pixels"], np.stack([p for p, _ in examples]) / np.float32(255))
        assert source.labels.decode(got.labels) == [label for _, label in examples]


def test_a_folder_per_label_with_a_partitioner_gives_every_image_to_one_client(tmp_path):
    image_tree(tmp_path / "tmp", clients=("x",), labels=(0, 1, 2), per_label=4)
    labels_root = tmp_path / "tmp" / "x"
    source = own_data.ImageFolderSource(labels_root, partitioner=functools.partial(partition.iid, num_clients=3,
                                                                                   seed=0))
    assert source.client_ids == ("client_0", "client_1", "client_2")
    sizes = [len(source.examples(client)) for client in source.client_ids]
    assert sizes == [4, 4, 4]
    assert sum(source.label_counts().values()).tolist() == [4, 4, 4]


def test_images_of_different_sizes_or_channels_name_both_files(tmp_path):
    image_tree(tmp_path)
    odd = tmp_path / "bob" / "1" / "9.png"
    save_png(odd, np.zeros((4, 6), dtype=np.uint8))
    with pytest.raises(own_data.ImageError) as error:
        own_data.ImageFolderSource(tmp_path)
    assert str(error.value).startswith(f"{odd} is 6x4 L, but {tmp_path / 'alice' / '0' / '0.png'} is 5x4 L")
    save_png(odd, np.zeros((4, 5, 3), dtype=np.uint8))
    with pytest.raises(own_data.ImageError, match=re.escape(f"{odd} is 5x4 RGB, but ")):
        own_data.ImageFolderSource(tmp_path)


def test_a_truncated_png_names_the_file_when_its_client_is_read(tmp_path):
    image_tree(tmp_path, per_label=1)
    broken = tmp_path / "bob" / "0" / "0.png"
    save_png(broken, np.random.default_rng(1).integers(0, 256, (4, 5), dtype=np.uint8))
    whole = broken.read_bytes()
    broken.write_bytes(whole[:len(whole) // 2])  # The header (33 bytes) survives; the pixel data does not.
    source = own_data.ImageFolderSource(tmp_path)
    assert len(source.examples("alice")) == 2  # Other clients still load.
    with pytest.raises(own_data.ImageError, match=re.escape(f"{broken}: cannot read the image")):
        source.examples("bob")


def test_an_empty_folder_is_named_at_each_level(tmp_path):
    with pytest.raises(own_data.ImageError, match=re.escape(f"{tmp_path}: empty folder (nothing)")):
        own_data.ImageFolderSource(tmp_path)
    image_tree(tmp_path)
    (tmp_path / "bob" / "7").mkdir()
    with pytest.raises(own_data.ImageError, match=re.escape(f"{tmp_path / 'bob' / '7'}: empty folder, no .png")):
        own_data.ImageFolderSource(tmp_path)


def test_images_directly_in_a_client_folder_suggest_a_partitioner(tmp_path):
    save_png(tmp_path / "7" / "a.png", np.zeros((4, 5), dtype=np.uint8))
    with pytest.raises(own_data.ImageError, match=r"It holds 1 images directly: for root/<label>/\*\.png, pass a "
                                                  r"partitioner"):
        own_data.ImageFolderSource(tmp_path)


# --- SQLite ------------------------------------------------------------------------------------------------------


def test_sqlite_reads_nothing_but_ids_and_labels_at_start_and_one_query_per_client(tmp_path):
    frame = table()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 't.db'}")
    own_data.write_sql_table(frame, engine, "examples")
    statements = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    source = own_data.SqlSource(engine, "examples", client_column="writer", label_column="label",
                                feature_columns=FEATURES)
    assert not [s for s in statements if "f0" in s]  # No feature was read to open it.
    statements.clear()
    source.examples("w3")
    assert len(statements) == 1 and "WHERE examples.writer = ?" in statements[0]


def test_an_index_on_the_client_column_is_offered_and_used(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 't.db'}")
    own_data.write_sql_table(table(), engine, "examples")
    source = own_data.SqlSource(engine, "examples", client_column="writer", label_column="label",
                                feature_columns=FEATURES)
    assert source.client_index() is None
    name = source.create_client_index()
    assert source.client_index() == name == "ix_examples_writer"
    assert source.create_client_index() == name  # A second call makes no second index.
    with engine.connect() as connection:
        plan = connection.exec_driver_sql("EXPLAIN QUERY PLAN SELECT f0 FROM examples WHERE writer = 'w1'").fetchall()
    assert any(name in str(row) for row in plan), plan


def test_a_missing_table_names_the_table_the_database_and_its_tables(tmp_path):
    url = f"sqlite:///{tmp_path / 't.db'}"
    own_data.write_sql_table(table(), url, "examples")
    with pytest.raises(own_data.SqlSourceError) as error:
        own_data.SqlSource(url, "exmaples", client_column="writer", label_column="label")
    assert str(error.value) == (f"{url} has no table 'exmaples'; its tables are ['examples'] (1). Pass one of those, "
                                "or create and fill the table first.")


def test_a_missing_sql_column_and_a_refused_query_name_the_table_and_the_database(tmp_path):
    url = f"sqlite:///{tmp_path / 't.db'}"
    engine = sa.create_engine(url)
    own_data.write_sql_table(table(), engine, "examples")
    with pytest.raises(own_data.ColumnError, match=re.escape(f"table 'examples' of {url} has no column 'person' "
                                                             "(client_column)")):
        own_data.SqlSource(url, "examples", client_column="person", label_column="label")
    source = own_data.SqlSource(url, "examples", client_column="writer", label_column="label", feature_columns=FEATURES)
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE examples RENAME TO gone")
    with pytest.raises(own_data.SqlSourceError) as error:
        source.examples("w1")
    assert str(error.value).startswith(f"table 'examples' of {url}: the database refused the query for client 'w1': "
                                       "no such table: examples.")


def test_a_sql_client_with_no_rows_and_a_non_numeric_sql_feature_are_named(tmp_path):
    url = f"sqlite:///{tmp_path / 't.db'}"
    own_data.write_sql_table(pd.DataFrame({"writer": ["a", "a", "b"], "label": [0, 1, 0], "f0": ["1", "x2", "3"]}),
                             url, "examples")
    source = own_data.SqlSource(url, "examples", client_column="writer", label_column="label", feature_columns=["f0"])
    with pytest.raises(own_data.EmptyClientError, match="client 'c' has no rows"):
        source.examples("c")
    with pytest.raises(own_data.FeatureValueError, match=re.escape(f"table 'examples' of {url}, client 'a', its row 2 "
                                                                   "in the query's order: column 'f0' holds 'x2'")):
        source.examples("a")



def test_a_big_sql_client_is_read_in_chunks_to_the_same_arrays_and_errors_name_the_row_past_the_first_chunk(
        tmp_path, monkeypatch):
    """With 3 rows a chunk, a client of 8 rows comes back exactly as in one piece, in order; a bad value in its
    7th row (the third chunk) is named as row 7, and a label unseen in training in its 5th as row 5."""
    url = f"sqlite:///{tmp_path / 't.db'}"
    values = [str(v) for v in range(8)]
    frame = pd.DataFrame({"writer": ["a"] * 8 + ["b"] * 8 + ["c"] * 8,
                          "label": [0, 1] * 4 + [0, 1] * 4 + [0, 1, 0, 1, 0, 1, 0, 1],
                          "f0": values + values[:6] + ["x", "7"] + values})
    frame.loc[20, "label"] = 7  # c's 5th row: a label the training map does not hold.
    own_data.write_sql_table(frame, url, "examples")
    source = own_data.SqlSource(url, "examples", client_column="writer", label_column="label", feature_columns=["f0"],
                                labels=own_data.LabelMap([0, 1, 7]))
    whole = source.examples("a")
    monkeypatch.setattr(own_data.SqlSource, "CHUNK_ROWS", 3)
    chunked = source.examples("a")
    np.testing.assert_array_equal(chunked.features["f0"], np.arange(8, dtype=np.float32))
    np.testing.assert_array_equal(chunked.features["f0"], whole.features["f0"])
    np.testing.assert_array_equal(chunked.labels, whole.labels)
    with pytest.raises(own_data.FeatureValueError, match="client 'b', its row 7 in the query's order: column 'f0' "
                                                         "holds 'x'"):
        source.examples("b")
    train_labels = own_data.LabelMap([0, 1])
    narrow = own_data.SqlSource(url, "examples", client_column="writer", label_column="label", feature_columns=["f0"],
                                labels=own_data.LabelMap([0, 1, 7]))
    narrow._labels = train_labels  # As if the table changed after the source was made.
    with pytest.raises(own_data.UnknownLabelError, match="client 'c', its row 5: label 7 was not seen"):
        narrow.examples("c")


def test_a_big_csv_client_is_parsed_in_batches_to_the_same_arrays_and_errors_name_the_line_past_the_first_batch(
        tmp_path, monkeypatch):
    """With 3 rows a batch, a client of 8 rows spread over the file comes back as in one piece; 'x' in its 7th row
    (the third batch) is named by its line in the file; a batch with no bad value still parses as numbers."""
    from tutorial_helpers.own_data import sources

    path = tmp_path / "t.csv"
    frame = pd.DataFrame({"writer": ["a", "b"] * 8, "label": [0, 1] * 8, "f0": [str(v / 4) for v in range(16)]})
    frame.to_csv(path, index=False)
    source = own_data.TableSource(path, client_column="writer", label_column="label", feature_columns=["f0"])
    whole = source.examples("a")
    monkeypatch.setattr(sources._CsvReader, "BATCH_ROWS", 3)
    batched = source.examples("a")
    np.testing.assert_array_equal(batched.features["f0"], np.arange(0, 16, 2, dtype=np.float32) / 4)
    np.testing.assert_array_equal(batched.features["f0"], whole.features["f0"])
    np.testing.assert_array_equal(batched.labels, whole.labels)
    frame.loc[13, "f0"] = "x"  # b's 7th row, line 15 of the file (the header is line 1).
    frame.to_csv(path, index=False)
    source = own_data.TableSource(path, client_column="writer", label_column="label", feature_columns=["f0"])
    with pytest.raises(own_data.FeatureValueError, match=re.escape(f"{path}, line 15 (row 14 after the header): "
                                                                   "column 'f0' holds 'x'")):
        source.examples("b")
    np.testing.assert_array_equal(source.examples("a").features["f0"], whole.features["f0"])


def test_a_csv_feature_of_words_pandas_reads_as_booleans_is_refused_whatever_else_is_in_the_file(tmp_path):
    """Read straight as numbers, 'True'/'False' would become 1.0/0.0 for a client whose rows hold nothing else:
    they are refused, for that client as for one whose rows mix them with numbers."""
    path = tmp_path / "t.csv"
    pd.DataFrame({"writer": ["a", "a", "b", "b"], "label": [0, 1, 0, 1],
                  "f0": ["True", "false", "True", "2.5"]}).to_csv(path, index=False)
    source = own_data.TableSource(path, client_column="writer", label_column="label", feature_columns=["f0"])
    for client in "ab":
        with pytest.raises(own_data.FeatureValueError, match="column 'f0' holds 'True', which is not a number"):
            source.examples(client)

# --- partitioners ------------------------------------------------------------------------------------------------


LABELS = np.repeat(np.arange(10), 100)  # 1,000 examples, 10 balanced classes.


@pytest.mark.parametrize("make", [
    functools.partial(partition.iid, num_clients=20),
    functools.partial(partition.dirichlet, num_clients=20, alpha=0.5),
    functools.partial(partition.shards, num_clients=20, shards_per_client=2),
])
def test_a_partitioner_gives_every_example_to_exactly_one_client_and_its_seed_decides(make):
    clients = make(LABELS, seed=0)
    assert list(clients) == partition.client_names(20)
    assert np.array_equal(np.sort(np.concatenate(list(clients.values()))), np.arange(len(LABELS)))
    again, other = make(LABELS, seed=0), make(LABELS, seed=1)
    assert all(np.array_equal(clients[c], again[c]) for c in clients)
    assert not all(np.array_equal(clients[c], other[c]) for c in clients)


def mean_distance(clients: dict) -> float:
    return float(np.mean(list(own_data.label_distance(
        {c: np.bincount(LABELS[rows], minlength=10) for c, rows in clients.items()}).values())))


def test_a_smaller_dirichlet_alpha_gives_more_label_skew_measured_with_notebook_01s_distance():
    """flwr-datasets documents alpha as the Dirichlet concentration: large is close to IID, small is skewed."""
    measured = {alpha: np.mean([mean_distance(partition.dirichlet(LABELS, 10, alpha=alpha, seed=seed))
                                for seed in range(5)]) for alpha in (0.05, 0.5, 5.0, 500.0)}
    values = list(measured.values())
    assert values == sorted(values, reverse=True), measured
    assert measured[0.05] > 0.6 and measured[500.0] < 0.05, measured
    # A large alpha shares each label out nearly exactly evenly: even less skew than IID sampling's chance.
    assert measured[500.0] < mean_distance(partition.iid(LABELS, 10, seed=0)) < measured[0.5], measured


def test_shards_give_each_client_at_most_its_number_of_labels():
    clients = partition.shards(LABELS, 50, shards_per_client=2, seed=0)  # 100 shards of 10: one label each.
    assert max(len(np.unique(LABELS[rows])) for rows in clients.values()) == 2
    assert {len(rows) for rows in clients.values()} == {20}
    assert mean_distance(clients) > mean_distance(partition.iid(LABELS, 50, seed=0)) + 0.5


def test_iid_clients_differ_in_size_by_at_most_one_and_by_column_groups_equal_values():
    sizes = [len(rows) for rows in partition.iid(np.zeros(103), 10, seed=3).values()]
    assert max(sizes) - min(sizes) == 1 and sum(sizes) == 103
    values = np.array([3, "a", 3, "b", "a"], dtype=object)
    assert {k: v.tolist() for k, v in partition.by_column(values).items()} == {"3": [0, 2], "a": [1, 4], "b": [3]}


def test_a_dirichlet_draw_that_cannot_fill_every_client_says_what_to_change():
    with pytest.raises(own_data.OwnDataError, match=r"some client always had fewer than min_examples=50 examples.*"
                                                    r"Raise alpha, or give fewer clients"):
        partition.dirichlet(LABELS, 20, alpha=0.01, seed=0, min_examples=50, max_draws=5)
    with pytest.raises(own_data.OwnDataError, match="num_clients=2000 for 1000 examples"):
        partition.iid(LABELS, 2000, seed=0)


# --- describe ----------------------------------------------------------------------------------------------------


def notebook_01_distance(counts: dict) -> dict:
    """Runs notebook 01's own cell that defines the distance (the cell, not a copy of it) on `counts`."""
    notebook = json.loads((ROOT / "notebooks" / "01_preprocessing.ipynb").read_text())
    cells = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    (cell,) = [source for source in cells if "distance = {cid: 0.5" in source]
    namespace = {"np": np, "counts": counts, "sizes": np.array([c.sum() for c in counts.values()])}
    exec(cell, namespace)  # It prints its summary line as well.
    return namespace["distance"]


def test_label_distance_is_notebook_01s_measure_on_a_small_case():
    counts = {"a": np.array([5, 0, 0]), "b": np.array([1, 1, 1]), "c": np.array([0, 2, 8])}
    theirs, ours = notebook_01_distance(counts), own_data.label_distance(counts)
    assert ours.keys() == theirs.keys()
    for cid in counts:
        assert ours[cid] == pytest.approx(theirs[cid], abs=1e-12)
    overall = np.array([6, 3, 9]) / 18  # By hand, for client a: 0.5 * (|1 - 1/3| + 1/6 + 1/2).
    assert ours["a"] == pytest.approx(0.5 * np.abs(np.array([1, 0, 0]) - overall).sum()) == pytest.approx(2 / 3)


def test_describe_counts_clients_sizes_and_labels_without_reading_features(tmp_path):
    frame = table(num_rows=90)
    source = written(frame, tmp_path)["parquet"]
    description = own_data.describe(source)
    sizes = frame.groupby("writer").size()
    summary = description.summary()
    assert (summary["clients"], summary["examples"]) == (6, 90)
    assert (summary["min"], summary["median"], summary["max"]) == (sizes.min(), sizes.median(), sizes.max())
    for cid, counts in description.label_counts.items():
        mine = frame[frame.writer == cid]
        assert counts.tolist() == [int((mine.label == value).sum()) for value in ("cat", "dog", "eel")]
    assert f"examples per client: min {sizes.min()}, median {sizes.median():g}, max {sizes.max()}" in str(description)


def test_the_label_figure_has_one_stack_per_label_and_one_bar_per_client(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    description = own_data.describe(written(table(), tmp_path)["frame"])
    figure = own_data.plot_label_distributions(description, max_clients=4, save_to=tmp_path / "labels.png")
    (axes,) = figure.axes
    assert [container.get_label() for container in axes.containers] == ["cat", "dog", "eel"]
    assert [tick.get_text() for tick in axes.get_xticklabels()] == ["w0", "w1", "w2", "w3"]
    tops = sum(np.array([bar.get_height() for bar in container]) for container in axes.containers)
    assert tops.tolist() == description.sizes[:4].tolist()
    assert "the first 4 of 6 clients" in axes.get_title() and (tmp_path / "labels.png").stat().st_size > 1000


def test_the_describe_command_prints_the_numbers_and_explains_bad_input(tmp_path, capsys):
    frame = table()
    frame.to_csv(tmp_path / "t.csv", index=False)
    assert main(["describe", str(tmp_path / "t.csv"), "--client-column", "writer", "--label-column", "label",
                 "--figure", str(tmp_path / "f.png")]) == 0
    out = capsys.readouterr().out
    sizes = frame.groupby("writer").size()
    assert out.startswith(f"6 clients, 60 examples\nexamples per client: min {sizes.min()}, median "
                          f"{sizes.median():g}, max {sizes.max()}\n3 labels: cat, dog, eel\n")
    assert (tmp_path / "f.png").is_file()
    assert main(["describe", str(tmp_path / "t.csv"), "--client-column", "person", "--label-column", "label"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 't.csv'} has no column 'person' (client_column)")


@pytest.mark.process
def test_python_m_describe_on_the_shipped_penguins_gives_the_islands():
    result = subprocess.run([sys.executable, "-m", "tutorial_helpers.own_data", "describe", str(PENGUINS),
                             "--client-column", "Island", "--label-column", "Species"],
                            capture_output=True, text=True, timeout=120)
    with open(PENGUINS, newline="") as file:
        islands = [row["Island"] for row in csv.DictReader(file)]
    sizes = sorted(islands.count(island) for island in set(islands))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{len(sizes)} clients, {len(islands)} examples\nexamples per client: min "
                                    f"{sizes[0]}, median {sizes[1]}, max {sizes[2]}\n")


# --- shipped data, safe ids --------------------------------------------------------------------------------------


def test_the_shipped_penguins_are_the_file_provenance_names():
    provenance = (ROOT / "tutorial_helpers" / "sample_data" / "PROVENANCE.md").read_text()
    section = provenance[provenance.index("# penguins-raw.csv"):]
    (documented,) = re.findall(r"data file's SHA-256: `([0-9a-f]{64})`", section)
    assert hashlib.sha256(PENGUINS.read_bytes()).hexdigest() == documented


def test_the_penguins_species_mix_differs_by_island():
    source = own_data.TableSource(PENGUINS, client_column="Island", label_column="Species")
    counts = source.label_counts()
    assert source.client_ids == ("Biscoe", "Dream", "Torgersen")
    assert (counts["Torgersen"] > 0).sum() == 1 and (counts["Biscoe"] > 0).sum() == 2  # Adelie only; no Chinstrap.


def site_pattern() -> str:
    """The pattern that a site's TFF computation checks ids with, read from tutorial_helpers/sites/data.py."""
    tree = ast.parse((ROOT / "tutorial_helpers" / "sites" / "data.py").read_text())
    (pattern,) = [node.args[1].value for node in ast.walk(tree) if isinstance(node, ast.Call)
                  and getattr(node.func, "attr", "") == "regex_full_match"]
    return pattern


@pytest.mark.parametrize("client_id", ["f3152_47", "Biscoe", "7", "a-b", "../clinic/x", "é", "", "a b", "a.b"])
def test_safe_client_id_accepts_exactly_what_a_site_accepts(client_id):
    accepted_by_site = re.fullmatch(site_pattern(), client_id, flags=re.ASCII) is not None
    if accepted_by_site:
        assert own_data.safe_client_id(client_id) == client_id
    else:
        with pytest.raises(own_data.ClientIdError, match=re.escape(f"client id {client_id!r} cannot be a file name")):
            own_data.safe_client_id(client_id)
    assert own_data.safe_client_id(17) == "17"


def test_an_unsafe_client_id_says_which_characters_and_suggests_a_name():
    with pytest.raises(own_data.ClientIdError) as error:
        own_data.safe_client_id("north/ward 3")
    assert "it holds ' ', '/'" in str(error.value) and "'north_ward_3'" in str(error.value)


def test_the_shipped_penguins_sql_is_what_the_csv_gives_and_loads_into_sqlite_as_the_same_clients(tmp_path):
    """sample_data/penguins.sql is regenerated from the CSV and compared whole; run in SQLite, each nest's rows
    equal the CSV's, in the same order; a copy with one value changed does not."""
    from tutorial_helpers.own_data import penguins

    assert penguins.PENGUINS_SQL.read_text(encoding="utf-8") == penguins.penguins_sql()
    url = f"sqlite:///{tmp_path / 'penguins.db'}"
    assert penguins.run_sql_script(penguins.PENGUINS_SQL, url) == 2 + 342
    table = penguins.penguins_source()
    source = own_data.SqlSource(url, "penguins", client_column="nest", label_column="Species", site_column="Island",
                                feature_columns=penguins.MEASUREMENTS)
    assert len(table.client_ids) == 134 and source.client_ids == table.client_ids
    assert source.sites() == table.sites() and set(table.sites()) == {"Biscoe", "Dream", "Torgersen"}
    assert source.client_index() == "penguins_nest"

    def same(a, b, client):
        return np.array_equal(a.examples(client).labels, b.examples(client).labels) and all(
            np.array_equal(a.examples(client).features[n], b.examples(client).features[n])
            for n in penguins.MEASUREMENTS)

    assert all(same(table, source, client) for client in table.client_ids)
    changed = tmp_path / "changed.sql"  # The control: one measurement off by 0.1 mm is seen.
    changed.write_text(penguins.PENGUINS_SQL.read_text().replace("'Torgersen_N1', 'Torgersen', "
                                                                  "'Adelie Penguin (Pygoscelis adeliae)', 39.1,",
                                                                  "'Torgersen_N1', 'Torgersen', "
                                                                  "'Adelie Penguin (Pygoscelis adeliae)', 39.2,", 1))
    other = f"sqlite:///{tmp_path / 'changed.db'}"
    penguins.run_sql_script(changed, other)
    other_source = own_data.SqlSource(other, "penguins", client_column="nest", label_column="Species",
                                      feature_columns=penguins.MEASUREMENTS)
    assert not same(table, other_source, "Torgersen_N1") and same(table, other_source, "Torgersen_N2")
    with pytest.raises(own_data.OwnDataError, match=r"penguins.sql, line 4: the database refused it: .*already exists"
                                                    r".*load the script into a new database file"):
        penguins.run_sql_script(penguins.PENGUINS_SQL, url)  # Twice into one database.
