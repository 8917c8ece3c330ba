"""Prints what training through sites costs, from one run: figures only, no pass/fail.

    .venv/bin/python benchmarks/sites.py [--clients 5 20 50 99] [--sites 1 2 4] [--rounds 1] [--figure PNG]
                                         [--gatekeeper [--tls]]

For each number of clients per round and each number of sites (the 99
training writers of the bundled EMNIST sample split unevenly: with 4 sites,
40, 30, 20 and 9 writers), and for today's single-worker worker-side path
(one worker reading TFF's SQLite file, notebook 06) next to them, it measures
after a warm-up round (which compiles):

  * seconds per round (the median of --rounds rounds);
  * bytes through the controller per round: every message to and from every
    worker, counted by the workers' `ChannelAudit`s;
  * peak memory (proportional set size, sampled every 0.2 s) of this process,
    the controller, and of each worker (launcher included): the largest site
    worker and the aggregator;

With --gatekeeper, each sites configuration is also measured with and
without a gatekeeper in front of every site's worker
(`tutorial_helpers.sites.gatekeeper`, the round approved): both sets of sites
run at once, and each round is run on both, one after the other, so that
the machine's changing speed cancels out of the difference. With --tls as
well, a third set of sites runs with gatekeepers that speak mutual TLS
(`tutorial_helpers.sites.tls`, a workshop CA made for the run), measured the same way.

Then it fits seconds per round = a + b x sites + c x clients over the site runs,
to say where the time goes as the rounds grow: a fixed cost per round, a cost
per site, a cost per client. With --figure, it also draws seconds and bytes
per round against clients per round (notebook 07's appendix shows one). The clients of a round are drawn with
`sample_clients` (seed: the round's number), the same for every configuration.
All processes share this machine's cores: more sites bring no more computing
power here, only their fixed costs.
"""

import argparse
import contextlib
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

MIB = 1024 * 1024


class PeakMemory:
    """Samples the PSS of this process and of each worker's process tree until stopped."""

    def __init__(self, workers: dict, interval: float = 0.2):
        import psutil

        self._psutil = psutil
        self._roots = {name: psutil.Process(worker.pid) for name, worker in workers.items()}
        self.peaks = dict.fromkeys(["controller", *workers], 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _pss(self, process, tree: bool) -> int:
        total = 0
        for p in [process, *(process.children(recursive=True) if tree else [])]:
            try:
                total += p.memory_full_info().pss
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                pass
        return total

    def _run(self, interval: float) -> None:
        me = self._psutil.Process()
        while not self._stop.wait(interval):
            self.peaks["controller"] = max(self.peaks["controller"], self._pss(me, tree=False))
            for name, root in self._roots.items():
                self.peaks[name] = max(self.peaks[name], self._pss(root, tree=True))

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return self.peaks


def split(ids: list[str], num_sites: int) -> dict[str, list[str]]:
    """`ids` over `num_sites` sites, unevenly: site i gets a share proportional to num_sites - i."""
    weights = list(range(num_sites, 0, -1))
    cuts, start = {}, 0
    for i, weight in enumerate(weights):
        end = len(ids) if i == num_sites - 1 else start + round(len(ids) * weight / sum(weights))
        cuts[f"site{i + 1}"] = ids[start:end]
        start = end
    return cuts


def make_roots(pool: Path, catalogue: dict[str, list[str]], counts: dict[str, int], folder: Path) -> dict:
    """Site roots whose clients/ hold hard links to the pool's files, and their catalogues."""
    import json

    roots = {}
    for site, clients in catalogue.items():
        root = folder / site
        (root / "clients").mkdir(parents=True)
        for client in clients:
            os.link(pool / "clients" / f"{client}.tfrecord", root / "clients" / f"{client}.tfrecord")
        (root / "catalogue.json").write_text(json.dumps({"clients": {c: counts[c] for c in clients}}))
        roots[site] = root
    return roots


def measure(process, clients_per_round: int, catalogue, rounds: int, workers: dict):
    """Seconds per round, bytes per round, and peak memory, after a warm-up round."""
    from tutorial_helpers.sites import sample_clients

    state = process.next(process.initialize(), sample_clients(catalogue, 1, seed=0)).state  # Warm-up.
    memory = PeakMemory(workers)
    seconds, moved = [], []
    try:
        for round_num in range(1, rounds + 1):
            clients = sample_clients(catalogue, clients_per_round, seed=round_num)
            before = sum(w.audit.bytes_sent + w.audit.bytes_received for w in workers.values())
            start = time.perf_counter()
            state = process.next(state, clients).state
            seconds.append(time.perf_counter() - start)
            moved.append(sum(w.audit.bytes_sent + w.audit.bytes_received for w in workers.values()) - before)
    finally:
        peaks = memory.stop()
    return statistics.median(seconds), statistics.median(moved), peaks


def measure_paired(process, clients_per_round: int, catalogue, rounds: int, contexts: dict) -> list[dict]:
    """For each of `rounds` rounds, {name: seconds} of the same round in each of `contexts`, one after the other.

    After a warm-up round in each; the order rotates from round to round.
    """
    import tensorflow_federated as tff

    from tutorial_helpers.sites import sample_clients

    states = {}
    for name, context in contexts.items():
        with tff.framework.get_context_stack().install(context):
            states[name] = process.next(process.initialize(), sample_clients(catalogue, 1, seed=0)).state
    names, measured = list(contexts), []
    for round_num in range(1, rounds + 1):
        clients = sample_clients(catalogue, clients_per_round, seed=round_num)
        seconds = {}
        for name in names[round_num % len(names):] + names[:round_num % len(names)]:
            with tff.framework.get_context_stack().install(contexts[name]):
                start = time.perf_counter()
                states[name] = process.next(states[name], clients).state
                seconds[name] = time.perf_counter() - start
        measured.append(seconds)
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[5, 20, 50, 99])
    parser.add_argument("--sites", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--rounds", type=int, default=1, help="timed rounds per configuration")
    parser.add_argument("--figure", type=Path, help="also draw the figures into this PNG file")
    parser.add_argument("--gatekeeper", action="store_true",
                        help="also measure each sites configuration with a gatekeeper per site")
    parser.add_argument("--tls", action="store_true", help="with --gatekeeper: also with mutual TLS")
    args = parser.parse_args()
    if args.tls and not args.gatekeeper:
        parser.error("--tls measures gatekeepers that speak TLS: give --gatekeeper too")

    import numpy as np
    import tensorflow_federated as tff

    from tutorial_helpers import data, model
    from tutorial_helpers.multi_worker import create_multi_worker_context, worker_side_process
    from tutorial_helpers.sites import (
        create_site_context,
        gatekeeper,
        site_dataset_computation,
        tls,
        write_site,
    )
    from tutorial_helpers.sites.audit import ChannelAudit

    train, _ = data.load_emnist(source="sample", verbose=False)
    ids = list(train.client_ids)
    if max(args.clients) > len(ids):
        parser.error(f"--clients: at most the sample's {len(ids)} writers")
    fed_avg = model.build_fed_avg()
    site_process = tff.simulation.compose_dataset_computation_with_learning_process(
        site_dataset_computation(), fed_avg)
    sqlite_process = worker_side_process(train, fed_avg)
    rows, paired = [], []
    with tempfile.TemporaryDirectory(prefix="kit-bench-sites-") as folder:
        folder = Path(folder)
        counts = write_site(train, ids, folder / "pool", canary=b"benchmark canary")
        if args.gatekeeper:
            gatekeeper.approve(folder / "approved", {"the benchmark's round": site_process.next})
            approved = (folder / "approved" / gatekeeper.APPROVALS).read_text()
        for clients_per_round in args.clients:
            # Today's path: one worker reads every client from TFF's SQLite file.
            with create_multi_worker_context(1) as context:
                worker = context.workers[0]
                worker.stub.audit = ChannelAudit()  # Count every message, as the sites' workers do.
                seconds, moved, peaks = measure(sqlite_process, clients_per_round, {"all": ids},
                                                args.rounds, {"worker": worker})
            rows.append(("1 worker, SQLite", 0, clients_per_round, seconds, moved, peaks["controller"],
                         peaks["worker"], 0))
            print(f"  measured {rows[-1][0]}, {clients_per_round} clients: {seconds:.1f} s", flush=True)
            for num_sites in args.sites:
                catalogue = split(ids, num_sites)
                roots = make_roots(folder / "pool", catalogue, counts, folder / f"{num_sites}-{clients_per_round}")
                with create_site_context(roots=roots) as context:
                    workers = {**context.sites, "aggregator": context.aggregator}
                    seconds, moved, peaks = measure(site_process, clients_per_round, catalogue,
                                                    args.rounds, workers)
                rows.append((f"{num_sites} site{'s' * (num_sites > 1)}", num_sites, clients_per_round, seconds,
                             moved, peaks["controller"], max(peaks[s] for s in catalogue), peaks["aggregator"]))
                print(f"  measured {rows[-1][0]}, {clients_per_round} clients: {seconds:.1f} s", flush=True)
                if args.gatekeeper:
                    keepers = {}
                    for site in catalogue:
                        keeper_folder = folder / f"{num_sites}-{clients_per_round}-{site}-gatekeeper"
                        keeper_folder.mkdir()
                        (keeper_folder / gatekeeper.APPROVALS).write_text(approved)
                        keepers[site] = gatekeeper.Gatekeeper(keeper_folder)
                    with contextlib.ExitStack() as stack:
                        contexts = {"plain": stack.enter_context(create_site_context(roots=roots)),
                                    "gatekeepers": stack.enter_context(create_site_context(roots=roots,
                                                                                           gatekeepers=keepers))}
                        if args.tls:
                            workshop = tls.make_workshop_ca(folder / f"tls-{num_sites}-{clients_per_round}",
                                                            list(catalogue))
                            contexts["gatekeepers, TLS"] = stack.enter_context(create_site_context(
                                roots=roots, gatekeepers=keepers, tls=workshop))
                        extra = measure_paired(site_process, clients_per_round, catalogue, args.rounds, contexts)
                    paired.append((num_sites, clients_per_round, extra))
                    print(f"  measured {num_sites} sites: {', '.join(contexts)}; {clients_per_round} clients",
                          flush=True)

    print(f"\nOne round of Federated Averaging (5 epochs, batch 1), median of {args.rounds} after a warm-up;")
    print("bytes: every message to and from every worker; memory: peak PSS in MiB.\n")
    print(f"{'configuration':18s} {'clients':>7s} {'s/round':>8s} {'KiB/round':>10s} {'controller':>10s} "
          f"{'largest site':>12s} {'aggregator':>10s}")
    for name, _, clients, seconds, moved, controller, site, aggregator in rows:
        print(f"{name:18s} {clients:7d} {seconds:8.1f} {moved / 1024:10,.0f} {controller / MIB:10.0f} "
              f"{site / MIB:12.0f} {aggregator / MIB if aggregator else float('nan'):10.0f}")
    if paired:
        print("\nThe gatekeepers' (and TLS's) extra time per round: the same round with and without them, one")
        print("after the other (the order rotating); the median of the differences to the plain sites, and of the")
        print("plain rounds:")
        for num_sites, clients, extra in paired:
            base = statistics.median(seconds["plain"] for seconds in extra)
            for name in [name for name in extra[0] if name != "plain"]:
                difference = statistics.median(seconds[name] - seconds["plain"] for seconds in extra)
                print(f"  {num_sites} sites, {clients:3d} clients, {name:16s}: {difference:+.2f} s on {base:.2f} s "
                      f"({100 * difference / base:+.0f} %), over {len(extra)} rounds")
    site_rows = [row for row in rows if row[1] > 0]
    if len({row[1] for row in site_rows}) > 1 and len({row[2] for row in site_rows}) > 1:
        design = np.array([[1.0, row[1], row[2]] for row in site_rows])
        fixed, per_site, per_client = np.linalg.lstsq(design, np.array([row[3] for row in site_rows]), rcond=None)[0]
        print(f"\nSeconds per round through sites ~ {fixed:.2f} + {per_site:.2f} x sites + {per_client:.3f} x clients "
              f"(least squares over {len(site_rows)} runs).")
    if args.figure is not None:
        draw(rows, args.figure)


def draw(rows, path: Path) -> None:
    """Seconds and KiB per round against clients per round, one line per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (time_axis, bytes_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name in dict.fromkeys(row[0] for row in rows):
        mine = [row for row in rows if row[0] == name]
        style = dict(marker="o", linestyle="--" if "SQLite" in name else "-")
        time_axis.plot([r[2] for r in mine], [r[3] for r in mine], label=name, **style)
        bytes_axis.plot([r[2] for r in mine], [r[4] / 1024 for r in mine], label=name, **style)
    time_axis.set(xlabel="clients per round", ylabel="seconds per round", title="Round time")
    bytes_axis.set(xlabel="clients per round", ylabel="KiB per round, all workers",
                   title="Bytes through the controller")
    for axis in (time_axis, bytes_axis):
        axis.grid(alpha=0.3)
    time_axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
