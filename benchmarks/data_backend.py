"""Prints what the DataBackend path costs: figures only, no pass/fail.

    .venv/bin/python benchmarks/data_backend.py [--rounds N] [--clients K] [--compare-uncontained]

Measures
  * the time to `import tensorflow_federated` in a fresh interpreter;
  * seconds per FedAvg round (the notebooks' model and data), with the
    clients' datasets passed directly and through a DataBackend by URI, in
    the same execution context, alternating so machine noise hits both;
  * with --compare-uncontained, also through a worker that is not contained
    in a private network (it listens on every interface while the benchmark
    runs, as TFF's own workers do): what containment costs;
  * peak resident memory of this controller process and of the TFF worker.
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

# TensorFlow logs its "Unable to register cuDNN/cuFFT/cuBLAS factory" start-up
# lines as errors (on machines without a GPU too); only level 3 hides them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


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


def program_pid(launcher_pid: int) -> int:
    """The pid of the program a kit launcher runs: its child if it has one, else itself."""
    import psutil

    children = psutil.Process(launcher_pid).children()
    return children[0].pid if children else launcher_pid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per path")
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--import-repeats", type=int, default=2)
    parser.add_argument("--compare-uncontained", action="store_true",
                        help="also time rounds on an uncontained worker (reachable from the network)")
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

    # The kit contains each worker in a private network where it can (see
    # tutorial_helpers.runtime.launcher); an uncontained worker listens as TFF's own do.
    per_round = {"direct datasets": [], "DataBackend (URIs)": []}
    contained_ctx = remote_data.create_execution_context(IndexBackend())
    uncontained_ctx = contained_ctx
    if args.compare_uncontained:
        per_round["DataBackend, uncontained worker"] = []
        uncontained_ctx = remote_data.create_execution_context(IndexBackend(), private_network=False)
    try:
        tff.framework.set_default_context(contained_ctx)
        state = process.initialize()
        start = time.perf_counter()
        state = process.next(state, direct()).state  # Warm-up: tracing, worker caches.
        warmup = time.perf_counter() - start
        tff.framework.set_default_context(uncontained_ctx)
        state = process.next(state, direct()).state  # The other worker's warm-up.
        paths = [("direct datasets", None, contained_ctx), ("DataBackend (URIs)", handle, contained_ctx)]
        if args.compare_uncontained:
            paths.append(("DataBackend, uncontained worker", handle, uncontained_ctx))
        for _ in range(args.rounds):
            for label, arg, ctx in paths:
                tff.framework.set_default_context(ctx)
                start = time.perf_counter()
                state = process.next(state, direct() if arg is None else arg).state
                per_round[label].append(time.perf_counter() - start)
        worker_peak = peak_rss_mib(program_pid(contained_ctx.worker.pid))
    finally:
        contained_ctx.close()
        uncontained_ctx.close()

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
    if args.compare_uncontained:
        containment = statistics.median(per_round["DataBackend (URIs)"]) / statistics.median(
            per_round["DataBackend, uncontained worker"]
        ) - 1
        print(f"  cost of containing the worker (medians): {containment * 100:+.1f}%")
    controller_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory: controller {controller_peak:.0f} MiB, TFF worker {worker_peak:.0f} MiB")


if __name__ == "__main__":
    main()
