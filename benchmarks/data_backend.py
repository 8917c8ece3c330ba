"""Prints what the DataBackend path costs: figures only, no pass/fail.

    .venv/bin/python benchmarks/data_backend.py [--rounds N] [--clients K]

Measures
  * the time to `import tensorflow_federated` in a fresh interpreter;
  * seconds per FedAvg round (the notebooks' model and data), with the
    clients' datasets passed directly and through a DataBackend by URI, in
    the same execution context, alternating so machine noise hits both;
  * peak resident memory of this controller process and of the TFF worker.
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def import_seconds(repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import tensorflow_federated"], check=True)
        times.append(time.perf_counter() - start)
    return times


def peak_rss_mib(pid: int) -> float:
    """VmHWM, the peak resident set size, of a live process (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per path")
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--import-repeats", type=int, default=2)
    args = parser.parse_args()

    times = import_seconds(args.import_repeats)
    print(f"import tensorflow_federated: {', '.join(f'{t:.1f}' for t in times)} s (fresh interpreters)")

    import tensorflow_federated as tff

    from tutorial_helpers import data, model, remote_data

    train, _ = data.load_emnist(source="sample", verbose=False)

    class IndexBackend(remote_data.DataBackend):
        async def materialize(self, ref, type_spec):
            return data.client_dataset(train, int(ref.uri.removeprefix("uri://")))

    process = model.build_fed_avg()
    uris = [f"uri://{i}" for i in range(args.clients)]
    handle = tff.framework.CreateDataDescriptor(uris, model.DATASET_TYPE)

    def direct():
        return [data.client_dataset(train, i) for i in range(args.clients)]

    per_round = {"direct datasets": [], "DataBackend (URIs)": []}
    with remote_data.create_execution_context(IndexBackend()) as ctx:
        state = process.initialize()
        start = time.perf_counter()
        state = process.next(state, direct()).state  # Warm-up: tracing, worker caches.
        warmup = time.perf_counter() - start
        for _ in range(args.rounds):
            for label, arg in (("direct datasets", None), ("DataBackend (URIs)", handle)):
                start = time.perf_counter()
                state = process.next(state, direct() if arg is None else arg).state
                per_round[label].append(time.perf_counter() - start)
        worker_peak = peak_rss_mib(ctx.worker.pid)

    examples = sum(
        len(list(train.create_tf_dataset_for_client(train.client_ids[i]))) for i in range(args.clients)
    )
    print(
        f"FedAvg round: {args.clients} clients, {examples * data.NUM_EPOCHS} examples "
        f"({data.NUM_EPOCHS} epochs, batch 1); first round {warmup:.2f} s"
    )
    for label, times in per_round.items():
        print(
            f"  {label:20s} median {statistics.median(times):.3f} s/round, "
            f"mean {statistics.mean(times):.3f}, min {min(times):.3f}, max {max(times):.3f} "
            f"({len(times)} rounds)"
        )
    overhead = statistics.median(per_round["DataBackend (URIs)"]) / statistics.median(
        per_round["direct datasets"]
    ) - 1
    print(f"  DataBackend overhead (medians): {overhead * 100:+.1f}%")
    controller_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory: controller {controller_peak:.0f} MiB, TFF worker {worker_peak:.0f} MiB")


if __name__ == "__main__":
    main()
