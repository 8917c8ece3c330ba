"""Notebook 10's exercise: fetch one client's rows from a SQL database, and only that client's."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from tutorial_helpers.exercises.common import CheckResult, not_yet, verdict

COLUMNS = ('"Culmen Length (mm)"', '"Culmen Depth (mm)"', '"Flipper Length (mm)"', '"Body Mass (g)"', '"Species"')
INJECTION = "Dream_N1' OR '1'='1"


class _NotesSql:
    """Notes the SQL text of each statement as the answer wrote it, before any parameter, then runs it."""

    def _note(self, sql: str) -> None:
        raise NotImplementedError

    def execute(self, sql, *args):
        self._note(sql)
        return super().execute(sql, *args)

    def executemany(self, sql, *args):
        self._note(sql)
        return super().executemany(sql, *args)

    def executescript(self, script):
        self._note(script)
        return super().executescript(script)


class _WatchedCursor(_NotesSql, sqlite3.Cursor):
    def _note(self, sql: str) -> None:
        self.connection.written.append(sql)


class _WatchedConnection(_NotesSql, sqlite3.Connection):
    """A real sqlite3 connection (so any sqlite3 code works on it) that notes what it is asked to run."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.written: list[str] = []

    def _note(self, sql: str) -> None:
        self.written.append(sql)

    def cursor(self, factory=_WatchedCursor):
        return super().cursor(factory)


def penguins_database() -> sqlite3.Connection:
    """A new in-memory SQLite database holding the shipped penguins table (sample_data/penguins.sql)."""
    from tutorial_helpers.own_data.penguins import PENGUINS_SQL

    connection = sqlite3.connect(":memory:", check_same_thread=False, factory=_WatchedConnection)
    connection.executescript(PENGUINS_SQL.read_text(encoding="utf-8"))
    connection.written.clear()
    return connection


def _rows_of(connection: sqlite3.Connection, statement: str) -> int | None:
    """How many rows `statement` (a query as SQLite ran it, parameters filled in) gives; None if it is no query."""
    try:
        return connection.execute(f"SELECT count(*) FROM (\n{statement.strip().rstrip(';')}\n)").fetchone()[0]
    except sqlite3.Error:
        return None


def _expected(connection: sqlite3.Connection, client_id: str) -> list[tuple]:
    return sorted(connection.execute(f"SELECT {', '.join(COLUMNS)} FROM penguins WHERE nest = ?", (client_id,)))


def check_client_rows(client_rows: Callable[[sqlite3.Connection, str], list]) -> CheckResult:
    """Exercise 10: `client_rows(connection, client_id)`, one nest's rows read by one query for that nest.

    The answer must return, for a nest of the penguins table, its rows as
    tuples (the four measurements, then the species), in any order; for an
    id that is no nest, no rows. It must ask the database for that client's
    rows only (no query it runs gives more rows than the nest has: the
    others' rows never leave the database), and pass the id as a parameter
    (the id never appears in the SQL text it writes): an id such as
    ``Dream_N1' OR '1'='1`` must find no rows, not every penguin.
    """
    connection = penguins_database()
    queries: list[str] = []
    connection.set_trace_callback(queries.append)
    problems = []
    cases = {"Biscoe_N1": "a nest of several penguins", "Torgersen_N10": "another island's nest",
             "Torgersen_N999": "an id that is no nest", INJECTION: f"the id {INJECTION!r}"}
    for client_id, text in cases.items():
        queries.clear()
        connection.written.clear()
        try:
            got = client_rows(connection, client_id)
        except NotImplementedError:
            return not_yet("client_rows still raises NotImplementedError.", "10_client_rows.py")
        except Exception as e:  # the learner's code may raise anything
            problems.append(f"For {text} it raised {type(e).__name__}: {e}.")
            continue
        connection.set_trace_callback(None)
        written = list(connection.written)  # The answer's statements; the check's own come next.
        expected = _expected(connection, client_id)
        most = max((n for n in (_rows_of(connection, q) for q in queries) if n is not None), default=None)
        connection.set_trace_callback(queries.append)
        if not isinstance(got, list) or not all(isinstance(row, tuple) for row in got):
            problems.append(f"For {text} it returned {type(got).__name__}: return a list of tuples, as "
                            "cursor.fetchall() gives.")
        elif client_id == INJECTION and len(got) > 1:
            problems.append(f"For {text} it returned {len(got)} rows, every penguin of the table: the id became part "
                            "of the SQL. Pass it as a parameter: execute('... WHERE nest = ?', (client_id,)).")
        elif got and len(got[0]) != len(COLUMNS):
            problems.append(f"For {text} its rows have {len(got[0])} values, not 5: select the four measurements "
                            "and then the species, in that order.")
        elif sorted(got) != expected:
            problems.append(f"For {text} it returned {len(got)} rows, not the nest's {len(expected)}. Compare the nest "
                            "exactly (=, not LIKE), and fetch every row (fetchall, not fetchone).")
        elif pasted := [sql for sql in written if client_id in sql]:
            problems.append(f"For {text} the id was written into the SQL text ({pasted[0]!r}). Pass it as "
                            "a parameter: execute('... WHERE nest = ?', (client_id,)), whatever quoting you add.")
        elif most is None:
            problems.append(f"For {text} it ran no query the check could see: send it with connection.execute(...) "
                            "(or a cursor of it) on the connection it is given.")
        elif most > len(expected):
            problems.append(f"For {text} it read the whole table and picked the nest's rows in Python: a query gave "
                            f"{most} rows, every client's rows left the database. Ask for that nest's rows only, "
                            "with a WHERE.")
    connection.close()
    return verdict(problems, "One query per client, the id passed as a parameter: what SqlSource.examples does "
                             "(through SQLAlchemy), and what a backend runs when a round resolves uri://<client>.")
