"""SqlSource against a real PostgreSQL server that the tests start and always stop (own_data.postgres).

The server is Debian's package (`.ci/run` installs it as root); where there
are no server binaries the tests skip, naming what is missing. As root the
server runs as Debian's `postgres` account, since PostgreSQL refuses root.
"""

import re

import numpy as np
import pandas as pd
import psutil
import pytest
import sqlalchemy as sa

from tutorial_helpers import own_data
from tutorial_helpers.own_data import postgres

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def server():
    try:
        local = postgres.LocalPostgres()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    try:
        local.start()
        yield local
    finally:
        local.stop()


def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"writer": rng.choice(["ann", "bo", "cy"], 50), "label": rng.integers(0, 3, 50),
                         "f0": rng.normal(size=50).round(4), "site": "north"})


def test_postgres_gives_each_client_its_rows_by_query_with_an_index(server):
    data = frame()
    engine = sa.create_engine(server.url)
    own_data.write_sql_table(data, engine, "examples")
    source = own_data.SqlSource(engine, "examples", client_column="writer", label_column="label",
                                feature_columns=["f0"], site_column="site")
    assert source.client_ids == ("ann", "bo", "cy") and source.labels.values == (0, 1, 2)
    assert source.create_client_index() == source.client_index() == "ix_examples_writer"
    for client in source.client_ids:
        mine = data[data.writer == client]
        got = source.examples(client)
        # PostgreSQL returns a plain scan's rows in no promised order: compare as sorted pairs.
        assert sorted(zip(got.features["f0"].tolist(), got.labels.tolist(), strict=True)) == sorted(
            zip(mine.f0.astype(np.float32).tolist(), mine.label.tolist(), strict=True))
        assert source.label_counts()[client].tolist() == np.bincount(mine.label, minlength=3).tolist()
    assert source.sites() == {"north": ("ann", "bo", "cy")}


def test_a_missing_table_and_a_refused_query_name_the_table_and_the_url_without_its_password(server):
    engine = sa.create_engine(server.url)
    own_data.write_sql_table(frame(), engine, "refused")
    hidden = server.url.replace(server.password, "***")
    with pytest.raises(own_data.SqlSourceError) as error:
        own_data.SqlSource(server.url, "missing", client_column="writer", label_column="label")
    assert str(error.value).startswith(f"{hidden} has no table 'missing'; its tables are [")
    assert server.password not in str(error.value)
    source = own_data.SqlSource(engine, "refused", client_column="writer", label_column="label",
                                feature_columns=["f0"])
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE refused")
    with pytest.raises(own_data.SqlSourceError) as error:
        source.examples("ann")
    assert re.match(rf"table 'refused' of {re.escape(hidden)}: the database refused the query for client 'ann': "
                    r".*relation \"refused\" does not exist", str(error.value)), str(error.value)
    assert server.password not in str(error.value)


def test_a_wrong_password_is_refused_and_named_without_the_password(server):
    wrong = server.url.replace(server.password, "not-the-password")
    with pytest.raises(own_data.SqlSourceError, match=r"kit:\*\*\*@127\.0\.0\.1.*cannot read the database's tables"):
        own_data.SqlSource(wrong, "examples", client_column="writer", label_column="label")


def test_the_server_is_stopped_and_its_folder_gone_even_when_the_code_inside_fails():
    try:
        local = postgres.LocalPostgres()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    with pytest.raises(RuntimeError, match="the code inside fails"):
        with local:
            folder = local.folder
            pid = int((folder / "data" / "postmaster.pid").read_text().split()[0])
            assert psutil.pid_exists(pid)
            with sa.create_engine(local.url).connect() as connection:
                assert connection.exec_driver_sql("SELECT 1").scalar() == 1
            raise RuntimeError("the code inside fails")
    assert not folder.exists()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_without_server_binaries_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setattr(postgres.glob, "glob", lambda pattern: [])
    monkeypatch.setenv("PATH", "/nonexistent")
    assert postgres.server_binaries() is None
    with pytest.raises(FileNotFoundError, match=re.escape("apt-get install postgresql")):
        postgres.LocalPostgres()


def test_the_shipped_penguins_sql_runs_on_postgres_and_gives_the_tables_clients(server):
    """The same script as SQLite's (tests/test_own_data.py), on a real PostgreSQL: every nest's rows, as the CSV's."""
    from tutorial_helpers.own_data import penguins

    engine = sa.create_engine(server.url)
    assert penguins.run_sql_script(penguins.PENGUINS_SQL, engine) == 2 + len(penguins.penguins_frame())
    table = penguins.penguins_source()
    source = own_data.SqlSource(engine, penguins.TABLE, client_column="nest", label_column="Species",
                                site_column="Island", feature_columns=penguins.MEASUREMENTS)
    assert source.client_index() == "penguins_nest"
    assert source.client_ids == table.client_ids and source.sites() == table.sites()
    for client in table.client_ids:
        expected, got = table.examples(client), source.examples(client)
        order, got_order = np.lexsort(list(expected.features.values())), np.lexsort(list(got.features.values()))
        np.testing.assert_array_equal(got.labels[got_order], expected.labels[order])
        for name in penguins.MEASUREMENTS:
            np.testing.assert_array_equal(got.features[name][got_order], expected.features[name][order])
