"""Prints what resolving clients of a big table costs in each format, beside loading it all: figures, no pass/fail.

    .venv/bin/python benchmarks/own_data.py [--rows 1000000] [--clients 10000] [--no-postgres]

It generates a table (into a temporary folder, deleted afterwards) of
--rows rows of --clients clients (each row's client drawn at random, so a
client's rows are spread over the file), 10 labels and 4 float32 features,
and writes it as CSV, as Parquet twice (sorted by client in row groups of
10,000 rows, and unsorted), into SQLite and into PostgreSQL (a server of its
own, `own_data.postgres.LocalPostgres`), both with an index on the client
column. Then, for each, in a fresh process (so that one measurement's memory
is not the next one's), it measures:

  * open: making the source (`own_data.TableSource` or `SqlSource`); for
    "load all", reading the whole table into a DataFrame (the naive way);
  * one client: the median of 5 clients resolved one by one (after one
    warm-up client), in ms; for "load all", selecting one client's rows
    from the loaded table;
  * a round of 10 other clients, in ms;
  * memory while resolving a further round of 10 (after opening): the
    round's own data (the arrays returned), the peak that tracemalloc traces
    (Python and numpy allocations, not Arrow's or SQLite's own), and the rise
    of the process's peak resident set (VmHWM, reset through
    /proc/self/clear_refs just before the round: every allocator); for
    "load all", the same two for the loading itself, since the whole table
    is then held through the round;
  * memory while opening, the same two ways: what the index costs.

How each method finds a client without loading the table: CSV, one pass at
open records each row's byte offsets (16 bytes a row), and a client is read
by seeking to its rows; Parquet, the client column is read at open and a
client's rows come from the row groups that hold them (all of them when the
file is not sorted by client); SQL, one query per client, on the index.
The files are in the page cache (just written): these are warm-cache times.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

FEATURES = ["f0", "f1", "f2", "f3"]


def generate(rows: int, clients: int, folder: Path, postgres_url: str | None) -> dict[str, str]:
    import pandas as pd
    import sqlalchemy as sa

    from tutorial_helpers.own_data import write_sql_table

    rng = np.random.default_rng(0)
    width = len(str(clients - 1))
    ids = np.array([f"c{i:0{width}d}" for i in range(clients)])
    frame = pd.DataFrame({"client": ids[rng.integers(0, clients, rows)], "label": rng.integers(0, 10, rows)})
    for name in FEATURES:
        frame[name] = rng.normal(size=rows).astype(np.float32)
    paths = {"csv": folder / "table.csv", "parquet sorted": folder / "sorted.parquet",
             "parquet unsorted": folder / "unsorted.parquet", "sqlite": folder / "table.db"}
    frame.to_csv(paths["csv"], index=False)
    frame.sort_values("client", kind="stable").to_parquet(paths["parquet sorted"], row_group_size=10_000, index=False)
    frame.to_parquet(paths["parquet unsorted"], index=False)
    targets = {kind: str(path) for kind, path in paths.items()}
    targets["sqlite"] = f"sqlite:///{paths['sqlite']}"
    if postgres_url:
        targets["postgresql"] = postgres_url
    for kind in ("sqlite", "postgresql"):
        if kind in targets:
            engine = sa.create_engine(targets[kind])
            write_sql_table(frame, engine, "examples")
            with engine.begin() as connection:
                connection.exec_driver_sql("CREATE INDEX ix_examples_client ON examples (client)")
                if kind == "postgresql":
                    connection.exec_driver_sql("ANALYZE examples")
    return targets


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


class Peak:
    """Peak memory of a block: tracemalloc's peak, and the rise of VmHWM over VmRSS at the start (KiB)."""

    def __enter__(self):
        Path("/proc/self/clear_refs").write_text("5")  # Resets VmHWM to the current VmRSS.
        self.rss = status_kib("VmRSS")
        tracemalloc.start()
        return self

    def __exit__(self, *exc_info):
        self.traced = tracemalloc.get_traced_memory()[1] // 1024
        tracemalloc.stop()
        self.hwm_rise = status_kib("VmHWM") - self.rss


def open_source(kind: str, target: str):
    from tutorial_helpers import own_data

    options = {"client_column": "client", "label_column": "label", "feature_columns": FEATURES}
    if kind in ("sqlite", "postgresql"):
        return own_data.SqlSource(target, "examples", **options)
    return own_data.TableSource(target, **options)


def load_all(kind: str, target: str):
    import pandas as pd
    import sqlalchemy as sa

    if kind == "csv":
        return pd.read_csv(target)
    if kind.startswith("parquet"):
        return pd.read_parquet(target)
    with sa.create_engine(target).connect() as connection:
        result = connection.exec_driver_sql("SELECT client, label, f0, f1, f2, f3 FROM examples")
        return pd.DataFrame.from_records(result.fetchall(), columns=list(result.keys()))


def nbytes(examples) -> int:
    return sum(array.nbytes for array in examples.features.values()) + examples.labels.nbytes


def round_bytes(frames) -> int:
    """What a round's rows take as the sources return them: float32 features and an int32 label a row."""
    return sum(len(frame) for frame in frames) * 4 * (len(FEATURES) + 1)


def measure(kind: str, method: str, target: str, clients: list[str]) -> dict:
    """One format and one method, in this (fresh) process; the libraries are imported before any timing."""
    import pandas  # noqa: F401
    import pg8000  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import sqlalchemy  # noqa: F401

    import tutorial_helpers.own_data  # noqa: F401

    started = time.perf_counter()
    if method == "by client":
        source = open_source(kind, target)
        resolve = source.examples
        opened = time.perf_counter() - started
        with Peak() as opening:  # Again, traced: tracemalloc slows what it traces.
            open_source(kind, target)
    else:
        with Peak() as opening:
            table = load_all(kind, target)
        opened = time.perf_counter() - started

        def resolve(client):
            return table[table["client"] == client]
    resolve(clients[0])
    singles = []
    for client in clients[1:6]:
        started = time.perf_counter()
        resolve(client)
        singles.append(time.perf_counter() - started)
    started = time.perf_counter()
    for client in clients[6:16]:
        resolve(client)
    round_seconds = time.perf_counter() - started
    result = {"open_s": opened, "open_traced_kib": opening.traced, "open_hwm_kib": opening.hwm_rise,
              "one_ms": 1000 * statistics.median(singles), "round_ms": 1000 * round_seconds}
    if method == "by client":
        with Peak() as peak:
            examples = [resolve(client) for client in clients[16:26]]
        result.update(data_kib=sum(nbytes(e) for e in examples) / 1024, traced_kib=peak.traced,
                      hwm_kib=peak.hwm_rise)
    else:  # The whole table is held while the round is resolved: the round's peak is the loading's.
        result.update(data_kib=round_bytes(resolve(client) for client in clients[16:26]) / 1024,
                      traced_kib=opening.traced, hwm_kib=opening.hwm_rise)
    return result


def row(kind: str, method: str, r: dict) -> str:
    ratio = r["traced_kib"] / r["data_kib"]
    return (f"| {kind} | {method} | {r['open_s']:.2f} | {r['open_traced_kib'] / 1024:,.1f} / "
            f"{r['open_hwm_kib'] / 1024:,.1f} | {r['one_ms']:.1f} | {r['round_ms']:.1f} | {r['data_kib']:,.0f} | "
            f"{r['traced_kib']:,.0f} / {r['hwm_kib']:,.0f} | {ratio:,.1f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--measure", nargs=4, metavar=("KIND", "METHOD", "TARGET", "CLIENTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        kind, method, target, clients = args.measure
        print(json.dumps(measure(kind, method, target, clients.split(","))))
        return
    from contextlib import ExitStack

    from tutorial_helpers.own_data import postgres

    with tempfile.TemporaryDirectory(prefix="own-data-bench-") as folder, ExitStack() as stack:
        url = None
        if not args.no_postgres:
            try:
                url = stack.enter_context(postgres.LocalPostgres()).url
            except FileNotFoundError as error:
                print(f"PostgreSQL skipped: {error}")
        started = time.perf_counter()
        targets = generate(args.rows, args.clients, Path(folder), url)
        print(f"{args.rows:,} rows, {args.clients:,} clients, 4 float32 features + an int label; "
              f"written in {time.perf_counter() - started:.0f} s")
        width = len(str(args.clients - 1))
        picked = np.random.default_rng(1).choice(args.clients, 26, replace=False)
        clients = ",".join(f"c{i:0{width}d}" for i in picked)
        print("| format | method | open s | open peak MiB: traced / RSS rise | one client ms | round of 10 ms "
              "| round data KiB | round peak KiB: traced / RSS rise | traced peak / data |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for kind, target in targets.items():
            for method in ("by client", "load all"):
                output = subprocess.run([sys.executable, __file__, "--measure", kind, method, target, clients],
                                        capture_output=True, text=True, check=True, env=os.environ).stdout
                print(row(kind, method, json.loads(output.splitlines()[-1])), flush=True)
    print("round data: 10 clients' arrays as the sources return them (float32 features, int32 labels). Round peak: "
          "while resolving those 10 after opening (by client); for load all, the loading's peak, since the whole "
          "table is held. traced = tracemalloc (Python and numpy allocations; not Arrow's pool nor the databases' "
          "C libraries); RSS rise = VmHWM after, less VmRSS before (reset through /proc/self/clear_refs): every "
          "allocator, but blind to memory the process already had and reuses.")


if __name__ == "__main__":
    main()
