"""Your own data as federated clients: tables, image folders and SQL databases (TensorFlow only in `federated`).

* `sources`: `TableSource` (CSV, Parquet, a pandas DataFrame),
  `ImageFolderSource` (`root/<client>/<label>/*.png` or `root/<label>/*.png`),
  `SqlSource` (SQLAlchemy: SQLite, PostgreSQL); each a `ClientSource` that
  reads one client's examples, as numpy arrays, when asked; `LabelMap`;
  `write_sql_table` (a DataFrame as a new SQL table).
* `partition`: clients where the data has none: `iid`, `dirichlet`,
  `shards`, `by_column`.
* `describe`: clients, examples per client, labels per client (a figure),
  notebook 01's distance from identically distributed.
* `errors`: `OwnDataError` and its kinds, each naming where and what to do;
  `safe_client_id`, the check a site's file names need.
* `postgres`: `LocalPostgres`, a throwaway server for the tests and the benchmark.
* ``python -m tutorial_helpers.own_data describe DATA --client-column C --label-column L``.

Importing this package imports no TensorFlow (a test checks); `federated`, the
TensorFlow adapter imported on its own, turns a source into `tf.data` datasets
and a `DataBackend`, and writes the EMNIST sample as images and tables.
"""

from tutorial_helpers.own_data import partition
from tutorial_helpers.own_data.describe import Description, describe, label_distance, plot_label_distributions
from tutorial_helpers.own_data.errors import (
    CLIENT_ID_PATTERN,
    ClientIdError,
    ColumnError,
    EmptyClientError,
    FeatureValueError,
    ImageError,
    OwnDataError,
    SqlSourceError,
    UnknownLabelError,
    safe_client_id,
)
from tutorial_helpers.own_data.sources import (
    ArraySpec,
    ClientExamples,
    ClientSource,
    ImageFolderSource,
    LabelMap,
    SqlSource,
    TableSource,
    label_value,
    write_sql_table,
)

__all__ = ["CLIENT_ID_PATTERN", "ArraySpec", "ClientExamples", "ClientIdError", "ClientSource", "ColumnError",
           "Description", "EmptyClientError", "FeatureValueError", "ImageError", "ImageFolderSource", "LabelMap",
           "OwnDataError", "SqlSource", "SqlSourceError", "TableSource", "UnknownLabelError", "describe",
           "label_distance", "label_value", "partition", "plot_label_distributions", "safe_client_id",
           "write_sql_table"]
