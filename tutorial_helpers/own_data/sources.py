"""Where the learner's data lives, as clients: a table, a folder of images, a SQL database.

Every source is a `ClientSource`: it knows its client ids, its labels and
the type of its examples at once, and reads one client's examples only when
asked (`examples(client_id)`), as numpy arrays. What a source reads when it
is opened, and what each call reads, is stated by each class. Nothing here
imports TensorFlow: a TensorFlow adapter turns a source into datasets.
"""

from __future__ import annotations

import abc
import functools
import io
import os
import re
from array import array
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from tutorial_helpers.own_data.errors import (
    ColumnError,
    EmptyClientError,
    FeatureValueError,
    ImageError,
    OwnDataError,
    SqlSourceError,
    UnknownLabelError,
)
from tutorial_helpers.own_data.partition import Partitioner, by_column

__all__ = ["ArraySpec", "ClientExamples", "ClientSource", "ImageFolderSource", "LabelMap", "SqlSource",
           "TableSource", "label_value", "write_sql_table"]

LABEL = "label"  # The name of the labels in `element_spec`.


class ArraySpec(NamedTuple):
    """The dtype and the shape of ONE example's value (the arrays a source returns add a first axis)."""

    dtype: np.dtype
    shape: tuple[int, ...]


class ClientExamples(NamedTuple):
    """One client's examples: `features` {name: array [n, ...]} and `labels` int32 [n], row i one example."""

    features: dict[str, np.ndarray]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def label_value(value: Any) -> int | str:
    """A label as the kit keeps it: an integer if it is one (3, 3.0, "3", numpy ints), otherwise its text."""
    if isinstance(value, bool | np.bool_ | int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return int(value)
    text = str(value).strip()
    return int(text) if re.fullmatch(r"[-+]?\d+", text) else text


def _sort_key(value: int | str) -> tuple:
    return (0, value, "") if isinstance(value, int) else (1, 0, value)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and np.isnan(value))


class LabelMap:
    """The labels' vocabulary: each label value and the integer the model sees, its index here.

    Values are kept as `label_value` gives them (integers, or text), sorted
    (integers first, in numeric order), so digits 0 to 9 map to 0 to 9. Build
    it from the training data, then give the same map to every other split
    (`TableSource(..., labels=train.labels)`): a value it does not hold is
    an UnknownLabelError that says where it is, never a new index.
    """

    def __init__(self, values: Iterable[Any]):
        self.values = tuple(sorted({label_value(value) for value in values}, key=_sort_key))
        if not self.values:
            raise OwnDataError("LabelMap: no label values given.")
        self.index = {value: position for position, value in enumerate(self.values)}

    def __len__(self) -> int:
        return len(self.values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelMap) and other.values == self.values

    def __hash__(self) -> int:
        return hash(self.values)

    def __repr__(self) -> str:
        return f"LabelMap({list(self.values)!r})"

    def encode(self, values: Sequence[Any], where: Callable[[int], str]) -> np.ndarray:
        """The index of each value, int32; `where(i)` names value i's place in a message if it is unknown."""
        import pandas as pd

        codes, uniques = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=True)
        if (codes < 0).any():
            position = int(np.argmax(codes < 0))
            raise UnknownLabelError(f"{where(position)}: the label is missing. Drop the rows without a label, "
                                    "or fill them in, before making the source.")
        lookup = np.empty(len(uniques), dtype=np.int32)
        for code, raw in enumerate(uniques):
            value = label_value(raw)
            if value not in self.index:
                position = int(np.argmax(codes == code))
                raise UnknownLabelError(
                    f"{where(position)}: label {value!r} was not seen in the training data, whose labels are "
                    f"{_shorten(self.values)}. Give this source the training source's map "
                    "(labels=train_source.labels), and drop or relabel the rows with labels that training never saw.")
            lookup[code] = self.index[value]
        return lookup[codes]

    def decode(self, indices: Iterable[int]) -> list[int | str]:
        """The label values of model indices."""
        return [self.values[int(index)] for index in indices]


def _shorten(items: Sequence[Any], limit: int = 8) -> str:
    shown = ", ".join(repr(item) for item in items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}] ({len(items)})"


class ClientSource(abc.ABC):
    """A set of clients and their examples, read one client at a time; the contract every source keeps.

    * `client_ids`: every client, as strings, sorted; known once the source
      is made, without reading any client's examples.
    * `labels`: the `LabelMap` of the labels; `element_spec`: for each
      feature, and for `"label"`, the dtype and shape of one example's value.
    * `examples(client_id)`: that client's examples, read now, as a
      `ClientExamples` whose arrays match `element_spec` with a first axis of
      the client's example count (at least 1). An id the source does not
      hold raises EmptyClientError; bad data raises an OwnDataError that
      names the file, row or column. Calling it twice reads twice.
    * `label_counts()`: {client id: examples per label index}, for `describe`.
    * `sites()`: {site: its client ids} when the data names a site per
      client, else {}.
    """

    @property
    @abc.abstractmethod
    def client_ids(self) -> tuple[str, ...]:
        """Every client's id."""

    @property
    @abc.abstractmethod
    def labels(self) -> LabelMap:
        """The label values and their indices."""

    @property
    @abc.abstractmethod
    def element_spec(self) -> dict[str, ArraySpec]:
        """{feature name or "label": ArraySpec of one example}."""

    @abc.abstractmethod
    def examples(self, client_id: str) -> ClientExamples:
        """One client's examples, read now."""

    def label_counts(self) -> dict[str, np.ndarray]:
        """{client id: int64 [number of labels], how many of the client's examples have each label}."""
        return {cid: np.bincount(self.examples(cid).labels, minlength=len(self.labels)) for cid in self.client_ids}

    def sites(self) -> dict[str, tuple[str, ...]]:
        """{site: its client ids}, or {} where the data has no sites."""
        return {}

    def check(self) -> None:
        """Reads every client once, raising the first OwnDataError (a whole-data check; slow on big data)."""
        for client_id in self.client_ids:
            self.examples(client_id)

    def unknown_client(self, client_id: str, where: str) -> EmptyClientError:
        """The error for an id with no rows, naming a few of the ids that exist."""
        return EmptyClientError(f"{where}: client {client_id!r} has no rows. The source's clients are "
                                f"{_shorten(self.client_ids, 5)}; resolve one of those, or check how the id was spelt.")


# --- tables ----------------------------------------------------------------------------------------------------


def _numeric_features(frame, names: Sequence[str], where: Callable[[int], str]) -> dict[str, np.ndarray]:
    """Each named column as float32; a value that is not a number, or none, raises FeatureValueError."""
    import pandas as pd

    features = {}
    for name in names:
        column = frame[name]
        numbers = pd.to_numeric(column, errors="coerce")
        bad = numbers.isna().to_numpy()
        if bad.any():
            first = int(np.argmax(bad))
            value = column.iloc[first]
            if _is_missing(value) or (isinstance(value, str) and not value.strip()):
                raise FeatureValueError(
                    f"{where(first)}: column {name!r} has no value. Drop the rows with missing values "
                    f"(DataFrame.dropna(subset=[{name!r}])) or fill them in, or leave the column out of "
                    "feature_columns.")
            raise FeatureValueError(
                f"{where(first)}: column {name!r} holds {value!r}, which is not a number (the first such row "
                "read). Feature columns must hold numbers: convert this column (a category to one number per "
                "category, e.g. with pandas.factorize), or leave it out of feature_columns.")
        features[name] = numbers.to_numpy(dtype=np.float32)
    return features


class _FrameReader:
    """A pandas DataFrame in memory."""

    def __init__(self, frame):
        self.frame = frame
        self.name = "the DataFrame"
        self.columns = [str(column) for column in frame.columns]

    def codes(self, name: str) -> tuple[np.ndarray, list]:
        import pandas as pd

        codes, uniques = pd.factorize(self.frame[name], use_na_sentinel=True)
        return codes.astype(np.int64), list(uniques)

    def rows(self, positions: np.ndarray, names: Sequence[str]):
        return self.frame.iloc[positions][list(names)].reset_index(drop=True)

    def row_name(self, position: int) -> str:
        return f"the DataFrame, row {position + 1} (index {self.frame.index[position]!r})"


class _ParquetReader:
    """A Parquet file: whole columns for the index; a client's rows from the row groups that hold them."""

    def __init__(self, path: Path):
        import pyarrow.parquet as pq

        self.name = str(path)
        try:
            self.file = pq.ParquetFile(path)
        except (OSError, ValueError) as error:
            raise OwnDataError(f"{path}: not a Parquet file that pyarrow can read ({error}).") from None
        self.columns = list(self.file.schema_arrow.names)
        sizes = [self.file.metadata.row_group(i).num_rows for i in range(self.file.num_row_groups)]
        self.group_ends = np.cumsum(sizes, dtype=np.int64)

    def codes(self, name: str) -> tuple[np.ndarray, list]:
        import pyarrow.compute as pc

        encoded = pc.dictionary_encode(self.file.read(columns=[name]).column(0)).combine_chunks()
        codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        return codes, encoded.dictionary.to_pylist()

    def rows(self, positions: np.ndarray, names: Sequence[str]):
        group_of = np.searchsorted(self.group_ends, positions, side="right")
        groups = np.unique(group_of)
        table = self.file.read_row_groups([int(group) for group in groups], columns=list(names))
        group_starts = np.r_[0, self.group_ends[:-1]]
        sizes = self.group_ends[groups] - group_starts[groups]
        start_in_table = np.r_[0, np.cumsum(sizes)[:-1]]
        local = positions - group_starts[group_of] + start_in_table[np.searchsorted(groups, group_of)]
        return table.take(local).to_pandas()

    def row_name(self, position: int) -> str:
        return f"{self.name}, row {position + 1}"


def _record_spans(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Byte offsets (start, end) of each data record of a CSV file, and the header's end; one pass.

    A record ends at a line end outside double quotes (RFC 4180), so a quoted
    field may hold line breaks; empty lines are skipped, as pandas does.
    """
    starts, ends = array("q"), array("q")
    with open(path, "rb") as file:
        header_end, quotes = 0, 0
        for line in file:  # The header (itself possibly several lines).
            header_end += len(line)
            quotes += line.count(b'"')
            if quotes % 2 == 0:
                break
        position, start, quotes = header_end, None, 0
        for line in file:
            if start is None:
                if not line.strip(b"\r\n"):
                    position += len(line)
                    continue
                start = position
            position += len(line)
            quotes += line.count(b'"')
            if quotes % 2 == 0:
                starts.append(start)
                ends.append(position)
                start, quotes = None, 0
    if start is not None:
        raise OwnDataError(f"{path}: the last record has an opening double quote and no closing one; "
                           "close the quoted field, or remove the stray quote.")
    return np.frombuffer(starts, dtype=np.int64), np.frombuffer(ends, dtype=np.int64), header_end


_BOOLEAN_WORD = re.compile(rb"(?i)true|false")


class _CsvReader:
    """A CSV file: whole columns for the index (pandas), a client's rows by their byte offsets.

    Opening makes one pass over the file to record where each row starts and
    ends (16 bytes a row); a client's rows are then read with a seek per run
    of adjacent rows, so a file grouped by client reads each client at once.
    """

    def __init__(self, path: Path):
        import pandas as pd

        self.path = path
        self.name = str(path)
        try:
            header = pd.read_csv(path, nrows=0)
        except pd.errors.EmptyDataError:
            raise OwnDataError(f"{path} is empty: a CSV file needs a header line naming its columns, then one "
                               "row per example.") from None
        self.columns = [str(column) for column in header.columns]
        self.starts, self.ends, self.header_end = _record_spans(path)

    def codes(self, name: str) -> tuple[np.ndarray, list]:
        import pandas as pd

        values = pd.read_csv(self.path, usecols=[name], dtype={name: "category"})[name]
        if len(values) != len(self.starts):
            raise OwnDataError(f"{self.path}: pandas reads {len(values)} rows and the row index {len(self.starts)}; "
                               "the file has quoting that the kit's index does not follow (quotes inside unquoted "
                               "fields?). Rewrite it with pandas (DataFrame.to_csv) or use Parquet.")
        return values.cat.codes.to_numpy(dtype=np.int64), list(values.cat.categories)

    BATCH_ROWS = 2048  # Rows read and parsed at a time: a batch's text, not a whole client's, is held at once.

    def rows(self, positions: np.ndarray, names: Sequence[str]):
        import pandas as pd

        frames = []
        with open(self.path, "rb") as file:
            for batch in range(0, len(positions), self.BATCH_ROWS):
                frames.append(self._parse(file, positions[batch:batch + self.BATCH_ROWS], names))
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

    def _parse(self, file, positions: np.ndarray, names: Sequence[str]):
        """The rows at `positions` (in order), read by seeking to each run of adjacent rows, as a DataFrame."""
        import pandas as pd

        starts, ends = self.starts[positions], self.ends[positions]
        breaks = np.flatnonzero(starts[1:] != ends[:-1]) + 1
        chunks = []
        for run_starts, run_ends in zip(np.split(starts, breaks), np.split(ends, breaks), strict=True):
            file.seek(int(run_starts[0]))
            chunk = file.read(int(run_ends[-1] - run_starts[0]))
            chunks.append(chunk if chunk.endswith(b"\n") else chunk + b"\n")
        raw = b"".join(chunks)
        read = functools.partial(pd.read_csv, header=None, names=self.columns, usecols=list(names),
                                 skip_blank_lines=False)
        # Numbers straight to arrays (text objects per value would take several times the memory), unless the
        # batch holds words pandas would read as booleans: as text, as before, so that they are refused.
        if not _BOOLEAN_WORD.search(raw):
            try:
                return read(io.BytesIO(raw), dtype={name: np.float64 for name in names})
            except (ValueError, TypeError):  # A value that is not a number: as text, so the error can quote it.
                pass
        return read(io.BytesIO(raw), dtype=str)

    def row_name(self, position: int) -> str:
        with open(self.path, "rb") as file:
            line = file.read(int(self.starts[position])).count(b"\n") + 1
        return f"{self.path}, line {line} (row {position + 1} after the header)"


def _open_table(data) -> _FrameReader | _ParquetReader | _CsvReader:
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return _FrameReader(data)
    path = Path(data)
    if not path.is_file():
        raise OwnDataError(f"{path}: no such file. Give the path of a .csv or .parquet file, or a pandas DataFrame.")
    if path.suffix.lower() in (".parquet", ".pq"):
        return _ParquetReader(path)
    if path.suffix.lower() in (".csv", ".txt"):
        return _CsvReader(path)
    raise OwnDataError(f"{path}: the kit reads .csv and .parquet files; for another format, read it into a pandas "
                       "DataFrame and pass that.")


class _ColumnSource(ClientSource):
    """A source with one row per example: `feature_columns` each a float32 of shape (), the label an index."""

    feature_columns: tuple[str, ...]
    _labels: LabelMap

    @property
    def labels(self) -> LabelMap:
        return self._labels

    @property
    def element_spec(self) -> dict[str, ArraySpec]:
        spec = {name: ArraySpec(np.dtype(np.float32), ()) for name in self.feature_columns}
        return {**spec, LABEL: ArraySpec(np.dtype(np.int32), ())}


class TableSource(_ColumnSource):
    """Clients from a table: a CSV or Parquet file, or a pandas DataFrame; one row per example.

    Clients come from `client_column` (one client per distinct value, the
    value's text as its id), or, where the table has none, from a
    `partitioner` (see `partition`) applied to the labels. `label_column`
    holds the labels (any values; `labels` maps them to indices, by default
    built from this table). `feature_columns` must hold numbers; each becomes
    a float32 feature of shape () under its column's name; labels are int32
    indices into `labels`. `site_column`, if given, names each client's site.

    Opening reads the client, label and site columns (not the features) and
    checks them: the named columns exist, there is at least one row, every
    label is in `labels`, each client has one site. For a CSV file it also
    records each row's byte offsets in one pass; for Parquet, the row groups.
    `examples(client)` then reads only that client's rows: the DataFrame's
    rows, the CSV's byte ranges, the Parquet row groups that hold them.
    """

    def __init__(self, data, *, label_column: str, feature_columns: Sequence[str] = (),
                 client_column: str | None = None, partitioner: Partitioner | None = None,
                 site_column: str | None = None, labels: LabelMap | None = None):
        if (client_column is None) == (partitioner is None):
            raise OwnDataError("TableSource: give exactly one of client_column (the column of client ids) and "
                               "partitioner (to make clients, e.g. partial(partition.iid, num_clients=10, seed=0)).")
        self.reader = _open_table(data)
        self.feature_columns = tuple(feature_columns)
        self.label_column, self.client_column, self.site_column = label_column, client_column, site_column
        self._check_columns()
        label_codes, label_uniques = self.reader.codes(label_column)
        if len(label_codes) == 0:
            raise OwnDataError(f"{self.reader.name} has a header and no rows: nothing to make clients of. Check that "
                               "the file was written completely, and that it is the file you meant.")
        if (label_codes < 0).any():
            raise UnknownLabelError(f"{self.reader.row_name(int(np.argmax(label_codes < 0)))}: the label is missing. "
                                    "Drop the rows without a label, or fill them in, before making the source.")
        self._labels = labels if labels is not None else LabelMap(label_uniques)
        where = self.reader.row_name
        self.encoded_labels = self._labels.encode(label_uniques, lambda i: where(int(np.argmax(label_codes == i))))[
            label_codes]
        self.client_rows = self._assign_clients(partitioner)
        self._sites = self._read_sites() if site_column is not None else {}

    def _check_columns(self) -> None:
        named = [(self.label_column, "label_column")] + [(c, "feature_columns") for c in self.feature_columns]
        named += [(column, role) for column, role in ((self.client_column, "client_column"),
                                                      (self.site_column, "site_column")) if column is not None]
        for column, role in named:
            if column not in self.reader.columns:
                raise ColumnError(
                    f"{self.reader.name} has no column {column!r} ({role}). Its columns are "
                    f"{_shorten(self.reader.columns, 20)}; pass one of those as {role}.")

    def _assign_clients(self, partitioner: Partitioner | None) -> dict[str, np.ndarray]:
        if partitioner is not None:
            rows = partitioner(self.encoded_labels)
            for client_id, positions in rows.items():
                if len(positions) == 0:
                    raise EmptyClientError(f"{self.reader.name}: the partitioner gave client {client_id!r} no rows. "
                                           "Ask for fewer clients, or (dirichlet) a larger alpha or min_examples=1.")
            return dict(sorted(rows.items(), key=lambda item: _sort_key(label_value(item[0]))))
        codes, names = self.reader.codes(self.client_column)
        if (codes < 0).any():
            raise ColumnError(f"{self.reader.row_name(int(np.argmax(codes < 0)))}: no client id in column "
                              f"{self.client_column!r}. Every row needs one: fill it in, or drop the row.")
        order = np.argsort(codes, kind="stable")
        groups = np.split(order, np.cumsum(np.bincount(codes, minlength=len(names)))[:-1])
        rows = {str(name): group for name, group in zip(names, groups, strict=True) if len(group)}
        return dict(sorted(rows.items(), key=lambda item: _sort_key(label_value(item[0]))))

    def _read_sites(self) -> dict[str, tuple[str, ...]]:
        site_codes, site_names = self.reader.codes(self.site_column)
        sites: dict[str, list[str]] = {}
        for client_id, positions in self.client_rows.items():
            codes = np.unique(site_codes[positions])
            found = sorted({str(site_names[code]) if code >= 0 else "(none)" for code in codes})
            if len(found) != 1:
                raise ColumnError(f"{self.reader.name}: client {client_id!r} has rows at sites {found} (column "
                                  f"{self.site_column!r}); a client lives at one site. Split it into one client per "
                                  "site, or correct the site column.")
            sites.setdefault(found[0], []).append(client_id)
        return {site: tuple(ids) for site, ids in sorted(sites.items())}

    @property
    def client_ids(self) -> tuple[str, ...]:
        return tuple(self.client_rows)

    def examples(self, client_id: str) -> ClientExamples:
        positions = self.client_rows.get(str(client_id))
        if positions is None:
            raise self.unknown_client(str(client_id), self.reader.name)
        frame = self.reader.rows(positions, self.feature_columns) if self.feature_columns else None
        features = _numeric_features(frame, self.feature_columns,
                                     lambda i: self.reader.row_name(int(positions[i])))
        return ClientExamples(features, self.encoded_labels[positions])

    def label_counts(self) -> dict[str, np.ndarray]:
        return {cid: np.bincount(self.encoded_labels[positions], minlength=len(self._labels))
                for cid, positions in self.client_rows.items()}

    def sites(self) -> dict[str, tuple[str, ...]]:
        return dict(self._sites)

    def __repr__(self) -> str:
        return f"TableSource({self.reader.name}, {len(self.client_rows)} clients, labels {self._labels.values!r})"


# --- image folders ---------------------------------------------------------------------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}


def _subfolders(folder: Path) -> list[Path]:
    return sorted((path for path in folder.iterdir() if path.is_dir() and not path.name.startswith(".")),
                  key=lambda path: _sort_key(label_value(path.name)))


def _images_in(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)


def _image_shape(path: Path) -> tuple[tuple[int, int], str]:
    """(width, height) and the mode the kit reads it in, from the image's header only."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size, _kit_mode(image)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ImageError(f"{path}: not an image that Pillow can read ({error}); replace or delete the file.") from None


def _kit_mode(image) -> str:
    if image.mode in _CHANNELS:
        return image.mode
    if image.mode == "P":
        return "RGBA" if "transparency" in image.info else "RGB"
    if image.mode in ("1", "I;16", "I", "F"):
        return "L"
    return "RGB"


class ImageFolderSource(ClientSource):
    """Clients from a folder of images, laid out as Keras' `image_dataset_from_directory` reads one.

    Without a partitioner: `root/<client>/<label>/*.png` (natural clients).
    With one: `root/<label>/*.png`, and the partitioner makes clients from the
    labels. Images are .png, .jpg or .jpeg, read in file-name order. Labels
    are the label folders' names (`label_value`: "7" is the integer 7).

    Opening lists the folders and reads every image's header (not its
    pixels): all must have one size and one mode (grayscale, RGB, ...), else
    ImageError names two files that differ; an empty folder is an error.
    `examples(client)` reads that client's images: feature `pixels`, float32
    in [0, 1] (value / 255), shape [n, height, width] for grayscale and
    [n, height, width, channels] otherwise; a damaged or truncated file is an
    ImageError naming it.
    """

    def __init__(self, root: str | os.PathLike, *, partitioner: Partitioner | None = None,
                 labels: LabelMap | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ImageError(f"{self.root}: no such folder. Give the folder that holds one folder per "
                             + ("label." if partitioner else "client (each with one folder per label)."))
        files, raw_labels = self._list(partitioner is None)
        self._labels = labels if labels is not None else LabelMap(raw_labels)
        paths = [path for path, _ in files]
        encoded = self._labels.encode(raw_labels, lambda i: str(paths[i]))
        rows = partitioner(encoded) if partitioner else by_column(np.array([owner for _, owner in files], dtype=object))
        self.client_rows = dict(sorted(rows.items(), key=lambda item: _sort_key(label_value(item[0]))))
        self.paths, self.encoded_labels = paths, encoded
        self.size, self.mode = self._check_shapes(paths)

    def _list(self, natural: bool) -> tuple[list[tuple[Path, str]], list[int | str]]:
        """[(image, client folder or "")], and each image's label folder name."""
        tops = _subfolders(self.root)
        loose = _images_in(self.root)
        if not tops:
            what = "one folder per client, each with one folder per label" if natural else "one folder per label"
            found = f"{len(loose)} images and no folders" if loose else "nothing"
            raise ImageError(f"{self.root}: empty folder ({found}); expected {what}, holding .png or .jpg images.")
        files, raw_labels = [], []
        for top in tops:
            for label_folder, owner in ([(sub, top.name) for sub in self._label_folders(top)] if natural
                                        else [(top, "")]):
                images = _images_in(label_folder)
                if not images:
                    raise ImageError(f"{label_folder}: empty folder, no .png or .jpg images. Add its images or "
                                     "remove the folder.")
                files += [(image, owner) for image in images]
                raw_labels += [label_value(label_folder.name)] * len(images)
        return files, raw_labels

    def _label_folders(self, client_folder: Path) -> list[Path]:
        folders = _subfolders(client_folder)
        if not folders:
            loose = _images_in(client_folder)
            hint = (f" It holds {len(loose)} images directly: for root/<label>/*.png, pass a partitioner, e.g. "
                    "partial(partition.iid, num_clients=10, seed=0).") if loose else ""
            raise ImageError(f"{client_folder}: empty folder, no label folders (expected "
                             f"{client_folder}/<label>/*.png).{hint}")
        return folders

    def _check_shapes(self, paths: Sequence[Path]) -> tuple[tuple[int, int], str]:
        size, mode = _image_shape(paths[0])
        for path in paths[1:]:
            other_size, other_mode = _image_shape(path)
            if (other_size, other_mode) != (size, mode):
                raise ImageError(
                    f"{path} is {other_size[0]}x{other_size[1]} {other_mode}, but {paths[0]} is {size[0]}x{size[1]} "
                    f"{mode}: every image must have the same size and channels. Resize or convert them first "
                    "(e.g. PIL's Image.resize and Image.convert('L')).")
        return size, mode

    @property
    def client_ids(self) -> tuple[str, ...]:
        return tuple(self.client_rows)

    @property
    def labels(self) -> LabelMap:
        return self._labels

    @property
    def element_spec(self) -> dict[str, ArraySpec]:
        width, height = self.size
        channels = _CHANNELS[self.mode]
        shape = (height, width) if channels == 1 else (height, width, channels)
        return {"pixels": ArraySpec(np.dtype(np.float32), shape), LABEL: ArraySpec(np.dtype(np.int32), ())}

    def read_image(self, path: Path) -> np.ndarray:
        """One image's pixels as float32 in [0, 1], shaped as `element_spec` says."""
        from PIL import Image

        try:
            with Image.open(path) as image:
                image.load()
                converted = image if image.mode == self.mode else image.convert(self.mode)
                pixels = np.asarray(converted, dtype=np.uint8)
        except (OSError, SyntaxError, ValueError) as error:
            raise ImageError(f"{path}: cannot read the image ({error}); the file is truncated or damaged. Replace "
                             "it with a good copy, or delete it.") from None
        return pixels.astype(np.float32) / 255.0

    def examples(self, client_id: str) -> ClientExamples:
        positions = self.client_rows.get(str(client_id))
        if positions is None:
            raise self.unknown_client(str(client_id), str(self.root))
        pixels = np.stack([self.read_image(self.paths[position]) for position in positions])
        return ClientExamples({"pixels": pixels}, self.encoded_labels[positions])

    def label_counts(self) -> dict[str, np.ndarray]:
        return {cid: np.bincount(self.encoded_labels[positions], minlength=len(self._labels))
                for cid, positions in self.client_rows.items()}

    def __repr__(self) -> str:
        return f"ImageFolderSource({self.root}, {len(self.client_rows)} clients, {self.size} {self.mode})"


# --- SQL -------------------------------------------------------------------------------------------------------


class SqlSource(_ColumnSource):
    """Clients from a table of a SQL database, through SQLAlchemy 1.4 (SQLite, PostgreSQL, ...).

    `database` is a SQLAlchemy URL (`sqlite:///data.db`,
    `postgresql+pg8000://user:password@host/db`) or an Engine. One row per
    example; `client_column` names the client (its values' text is the
    client id), `label_column` the label, `feature_columns` numeric features
    (float32, shape () each); `site_column`, if given, each client's site.

    Opening runs a few small queries: the table's columns, the distinct
    client ids, the distinct labels (checked against `labels` when given).
    No example is loaded. `examples(client)` runs one query, `SELECT
    <features>, <label> FROM <table> WHERE <client_column> = :id`, and
    returns its rows in the database's order, fetched and converted to
    arrays `CHUNK_ROWS` at a time (streamed from the server where the driver
    can), so that a big client's rows are never all Python objects at once.
    Without an index on the
    client column that query scans the table: `create_client_index()` makes
    one. Every error names the table and the database's URL, without its
    password.
    """

    CHUNK_ROWS = 1024  # Rows fetched and converted at a time.

    def __init__(self, database, table: str, *, client_column: str, label_column: str,
                 feature_columns: Sequence[str] = (), site_column: str | None = None, labels: LabelMap | None = None):
        import sqlalchemy as sa

        self.engine = sa.create_engine(database) if isinstance(database, str) else database
        self.url = self.engine.url.render_as_string(hide_password=True)
        self.table_name, self.client_column, self.label_column = table, client_column, label_column
        self.feature_columns, self.site_column = tuple(feature_columns), site_column
        self._check_table()
        names = [client_column, label_column, *self.feature_columns] + ([site_column] if site_column else [])
        self.table = sa.table(table, *[sa.column(name) for name in dict.fromkeys(names)])
        self._ids = self._read_client_ids()
        self._labels = self._read_labels(labels)

    def _where(self) -> str:
        return f"table {self.table_name!r} of {self.url}"

    def _run(self, statement, doing: str) -> list:
        return [row for chunk in self._chunks(statement, doing) for row in chunk]

    def _chunks(self, statement, doing: str):
        """The statement's rows, `CHUNK_ROWS` at a time, streamed (a server-side cursor where the driver has one)."""
        import sqlalchemy as sa

        try:
            with self.engine.connect() as connection:
                result = connection.execution_options(stream_results=True).execute(statement)
                while rows := result.fetchmany(self.CHUNK_ROWS):
                    yield rows
        except sa.exc.SQLAlchemyError as error:
            detail = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
            raise SqlSourceError(f"{self._where()}: the database refused {doing}: {detail}. Check the table and "
                                 "column names, and that the database is running and reachable.") from None

    def _check_table(self) -> None:
        import sqlalchemy as sa

        try:
            inspector = sa.inspect(self.engine)
            if not inspector.has_table(self.table_name):
                tables = inspector.get_table_names()
                raise SqlSourceError(f"{self.url} has no table {self.table_name!r}; its tables are "
                                     f"{_shorten(tables, 20)}. Pass one of those, or create and fill the table first.")
            columns = [column["name"] for column in inspector.get_columns(self.table_name)]
        except sa.exc.SQLAlchemyError as error:
            detail = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
            raise SqlSourceError(f"{self.url}: cannot read the database's tables ({detail}). Check the URL, and "
                                 "that the database is running and reachable.") from None
        roles = [(self.client_column, "client_column"), (self.label_column, "label_column")]
        roles += [(name, "feature_columns") for name in self.feature_columns]
        roles += [(self.site_column, "site_column")] if self.site_column else []
        for column, role in roles:
            if column not in columns:
                raise ColumnError(f"{self._where()} has no column {column!r} ({role}). Its columns are "
                                  f"{_shorten(columns, 20)}; pass one of those as {role}.")

    def _read_client_ids(self) -> dict[str, Any]:
        import sqlalchemy as sa

        client = self.table.c[self.client_column]
        values = [row[0] for row in self._run(sa.select(client).distinct(), "listing the clients")]
        if not values:
            raise OwnDataError(f"{self._where()} has no rows: nothing to make clients of. Fill the table first.")
        if any(value is None for value in values):
            raise ColumnError(f"{self._where()}: some rows have no client id (NULL in {self.client_column!r}). "
                              "Fill them in or delete those rows.")
        return dict(sorted(((str(value), value) for value in values), key=lambda item: _sort_key(label_value(item[0]))))

    def _read_labels(self, labels: LabelMap | None) -> LabelMap:
        import sqlalchemy as sa

        label = self.table.c[self.label_column]
        found = [row[0] for row in self._run(sa.select(label).distinct(), "listing the labels")]
        if labels is None:
            if any(_is_missing(value) for value in found):
                raise UnknownLabelError(f"{self._where()}: some rows have no label (NULL in {self.label_column!r}). "
                                        "Fill them in or delete those rows.")
            return LabelMap(found)
        unknown = [value for value in found if _is_missing(value) or label_value(value) not in labels.index]
        if unknown:
            owner = self._run(sa.select(self.table.c[self.client_column]).where(label == unknown[0]).limit(1),
                              "finding a row with an unknown label")
            labels.encode([unknown[0]], lambda _: f"{self._where()}, client {str(owner[0][0])!r} (and maybe others)")
        return labels

    @property
    def client_ids(self) -> tuple[str, ...]:
        return tuple(self._ids)

    def examples(self, client_id: str) -> ClientExamples:
        import pandas as pd
        import sqlalchemy as sa

        client_id = str(client_id)
        if client_id not in self._ids:
            raise self.unknown_client(client_id, self._where())
        names = [*self.feature_columns, self.label_column]
        statement = sa.select(*[self.table.c[name] for name in names]).where(
            self.table.c[self.client_column] == self._ids[client_id])
        where, done = self._where(), 0
        parts: list[tuple[dict[str, np.ndarray], np.ndarray]] = []
        # Converted a chunk at a time: the rows as Python objects take several times the arrays' memory.
        for rows in self._chunks(statement, f"the query for client {client_id!r}"):
            frame = pd.DataFrame.from_records(rows, columns=names)
            features = _numeric_features(frame, self.feature_columns, lambda i, start=done: (
                f"{where}, client {client_id!r}, its row {start + i + 1} in the query's order"))
            labels = self._labels.encode(frame[self.label_column].to_numpy(dtype=object), lambda i, start=done: (
                f"{where}, client {client_id!r}, its row {start + i + 1}"))
            parts.append((features, labels))
            done += len(rows)
        if not parts:
            raise EmptyClientError(f"{self._where()}: client {client_id!r} has no rows now (it had when the source "
                                   "was made); make the source again to see the current clients.")
        if len(parts) == 1:
            return ClientExamples(*parts[0])
        return ClientExamples({name: np.concatenate([f[name] for f, _ in parts]) for name in self.feature_columns},
                              np.concatenate([labels for _, labels in parts]))

    def label_counts(self) -> dict[str, np.ndarray]:
        import sqlalchemy as sa

        client, label = self.table.c[self.client_column], self.table.c[self.label_column]
        rows = self._run(sa.select(client, label, sa.func.count()).group_by(client, label), "counting the labels")
        counts = {cid: np.zeros(len(self._labels), dtype=np.int64) for cid in self._ids}
        for client_value, label_raw, count in rows:
            counts[str(client_value)][self._labels.index[label_value(label_raw)]] += count
        return counts

    def sites(self) -> dict[str, tuple[str, ...]]:
        import sqlalchemy as sa

        if self.site_column is None:
            return {}
        client, site = self.table.c[self.client_column], self.table.c[self.site_column]
        found: dict[str, set[str]] = {}
        for client_value, site_value in self._run(sa.select(client, site).distinct(), "listing the sites"):
            found.setdefault(str(client_value), set()).add(str(site_value))
        by_site: dict[str, list[str]] = {}
        for cid in self._ids:
            if len(found[cid]) != 1:
                raise ColumnError(f"{self._where()}: client {cid!r} has rows at sites {sorted(found[cid])}; a client "
                                  "lives at one site. Correct the site column.")
            by_site.setdefault(next(iter(found[cid])), []).append(cid)
        return {site: tuple(ids) for site, ids in sorted(by_site.items())}

    def client_index(self) -> str | None:
        """The name of an index whose first column is the client column, or None."""
        import sqlalchemy as sa

        for index in sa.inspect(self.engine).get_indexes(self.table_name):
            if index["column_names"] and index["column_names"][0] == self.client_column:
                return index["name"]
        return None

    def create_client_index(self) -> str:
        """Makes an index on the client column if there is none (so one client is a lookup); returns its name."""
        import sqlalchemy as sa

        existing = self.client_index()
        if existing:
            return existing
        name = f"ix_{self.table_name}_{self.client_column}"
        table = sa.Table(self.table_name, sa.MetaData(), sa.Column(self.client_column))
        try:
            sa.Index(name, table.c[self.client_column]).create(self.engine)
        except sa.exc.SQLAlchemyError as error:
            detail = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
            raise SqlSourceError(f"{self._where()}: cannot create index {name!r}: {detail}. Ask the database's owner "
                                 "to create it, or do without (each client's query then scans the table).") from None
        return name

    def __repr__(self) -> str:
        return f"SqlSource({self._where()}, {len(self._ids)} clients)"



def _sql_type(dtype):
    import sqlalchemy as sa

    if np.issubdtype(dtype, np.bool_):
        return sa.Boolean()
    if np.issubdtype(dtype, np.integer):
        return sa.BigInteger()
    if np.issubdtype(dtype, np.floating):
        return sa.Float()
    return sa.Text()


def write_sql_table(frame, database, table: str, *, chunk_rows: int = 50_000) -> None:
    """Writes a pandas DataFrame as a NEW table (error if it exists): integers, floats, booleans, the rest text.

    What `DataFrame.to_sql` would do, but pandas 2.2+ refuses SQLAlchemy 1.4,
    which TFF's dependencies pin. `database` is a URL or an Engine. Rows go
    in chunks of `chunk_rows`; on PostgreSQL with pg8000, through COPY.
    """
    import sqlalchemy as sa

    engine = sa.create_engine(database) if isinstance(database, str) else database
    columns = [sa.Column(str(name), _sql_type(frame[name].dtype)) for name in frame.columns]
    target = sa.Table(table, sa.MetaData(), *columns)
    target.create(engine)
    with engine.begin() as connection:
        for start in range(0, len(frame), chunk_rows):
            chunk = frame.iloc[start:start + chunk_rows]
            if engine.dialect.name == "postgresql" and engine.driver == "pg8000":
                text = io.StringIO(chunk.to_csv(index=False, header=False))
                quoted = ", ".join(engine.dialect.identifier_preparer.quote(str(name)) for name in frame.columns)
                connection.connection.cursor().execute(
                    f"COPY {engine.dialect.identifier_preparer.quote(table)} ({quoted}) FROM STDIN WITH (FORMAT csv)",
                    stream=text)
            else:
                records = [dict(zip(map(str, frame.columns), row, strict=True))
                           for row in chunk.astype(object).where(chunk.notna(), None).itertuples(index=False)]
                connection.execute(target.insert(), records)
