"""The kit's real table with natural sites: palmerpenguins' ``penguins-raw.csv`` as nests (clients) on islands (sites).

* `penguins_frame()`: the table (`sample_data/penguins-raw.csv`, its
  PROVENANCE says where it comes from), the two penguins without
  measurements dropped, and a column ``nest``: the island and the nest
  number of ``Individual ID`` (``N1A1`` is nest 1, bird A1), such as
  ``Biscoe_N1``, over the three seasons.
* `penguins_source()`: that table as a `TableSource`: a client per nest, a
  site per island, the species as label, the four `MEASUREMENTS` as features.
* `penguins_sql()`: the same rows as a SQL script (`PENGUINS_SQL`, shipped),
  one statement per line, that SQLite and PostgreSQL both run;
  `run_sql_script(path, database)` runs it.

No TensorFlow is imported here.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from tutorial_helpers.own_data.errors import OwnDataError
from tutorial_helpers.own_data.sources import TableSource

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"
PENGUINS_CSV = SAMPLE_DATA / "penguins-raw.csv"
PENGUINS_SQL = SAMPLE_DATA / "penguins.sql"
TABLE = "penguins"
MEASUREMENTS = ("Culmen Length (mm)", "Culmen Depth (mm)", "Flipper Length (mm)", "Body Mass (g)")
# The SQL table's columns: (name, SQL type); the rest of the CSV's columns are left out.
SQL_COLUMNS = (("nest", "TEXT"), ("Island", "TEXT"), ("Species", "TEXT"),
               *((name, "DOUBLE PRECISION") for name in MEASUREMENTS),
               ("Sex", "TEXT"), ("studyName", "TEXT"), ("Individual ID", "TEXT"))


def penguins_frame():
    """The penguins with all four measurements (342 of 344), with a ``nest`` column: ``<island>_N<nest>``."""
    import pandas as pd

    frame = pd.read_csv(PENGUINS_CSV).dropna(subset=list(MEASUREMENTS)).reset_index(drop=True)
    frame["nest"] = frame["Island"] + "_" + frame["Individual ID"].str.extract(r"^(N\d+)", expand=False)
    return frame


def penguins_source(frame=None) -> TableSource:
    """`penguins_frame()` (or `frame`) as clients: one per nest, at its island, labelled by species."""
    return TableSource(penguins_frame() if frame is None else frame, client_column="nest", label_column="Species",
                       site_column="Island", feature_columns=MEASUREMENTS)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value) -> str:
    """A SQL literal for the penguins' values: text, finite floats, or NULL."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NULL"
    if isinstance(value, float):
        return repr(value)  # The shortest text that reads back to the same double: 39.1, 3750.0.
    return "'" + str(value).replace("'", "''") + "'"


def penguins_sql(frame=None) -> str:
    """The SQL script of `PENGUINS_SQL`: a table ``penguins``, an index on ``nest``, then one INSERT per penguin."""
    frame = penguins_frame() if frame is None else frame
    names = [name for name, _ in SQL_COLUMNS]
    lines = [
        "-- The penguins of tutorial_helpers/sample_data/penguins-raw.csv (palmerpenguins 0.1.6, CC0: see "
        "PROVENANCE.md)",
        "-- with all four measurements, as one SQL table; written by "
        "tutorial_helpers.own_data.penguins.penguins_sql().",
        "-- One statement per line. SQLite: sqlite3 penguins.db < penguins.sql; PostgreSQL: psql -f penguins.sql.",
        f"CREATE TABLE {TABLE} ({', '.join(f'{_quote(name)} {kind}' for name, kind in SQL_COLUMNS)});",
        f"CREATE INDEX {TABLE}_nest ON {TABLE} ({_quote('nest')});",
    ]
    quoted = ", ".join(_quote(name) for name in names)
    for row in frame[names].itertuples(index=False):
        lines.append(f"INSERT INTO {TABLE} ({quoted}) VALUES ({', '.join(_literal(value) for value in row)});")
    return "\n".join(lines) + "\n"


def run_sql_script(path: str | os.PathLike, database) -> int:
    """Runs a SQL script of one statement per line (``--`` lines are comments), in order; the statements run.

    `database` is a SQLAlchemy URL or Engine, e.g. ``sqlite:///penguins.db``,
    that does not hold the script's table yet (`PENGUINS_SQL` creates
    ``penguins``): give a new database file. The inserts are one transaction;
    SQLite's driver runs CREATE statements outside it, so a failure part way
    can leave an empty table behind. A statement the database refuses raises
    OwnDataError naming the script's line.
    """
    import sqlalchemy as sa

    engine = sa.create_engine(database) if isinstance(database, str) else database
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    statements = [(number, line) for number, line in enumerate(lines, 1) if line.strip() and not line.startswith("--")]
    with engine.begin() as connection:
        for number, statement in statements:
            try:
                connection.exec_driver_sql(statement.rstrip(";"))
            except sa.exc.SQLAlchemyError as error:
                detail = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
                raise OwnDataError(f"{path}, line {number}: the database refused it: {detail}. If the table exists "
                                   "already, load the script into a new database file, or drop the table "
                                   "first.") from None
    return len(statements)
