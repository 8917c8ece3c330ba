"""Prints what loading remote data costs, from one run: figures only, no pass/fail.

    .venv/bin/python benchmarks/remote_data.py [--rounds N]

Measures
  * the time to resolve 32 URIs from the data service with 100 ms injected
    latency, one at a time and concurrently: fetching only, and fetching plus
    building the preprocessed datasets (targets: at least 10x faster, under
    0.4 s);
  * bytes of client data through the controller per round (received from the
    service plus sent to the workers), and seconds per round, for: datasets
    reading TFF's file, the HTTP backend one client at a time and
    concurrently, and worker-side loading on two workers (target for
    worker-side loading: the client ids only);
  * the time to read five clients' datasets to the end in this process: from
    TFF's SQLite file (preprocessed, and one raw epoch) and from memory;
  * seconds per round of the DataBackend path against passing the same
    datasets directly (target: at most 10% overhead).
"""

import argparse
import asyncio
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds per mode")
    parser.add_argument("--uris", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.1)
    args = parser.parse_args()

    import tensorflow_federated as tff
    from tensorflow_federated.proto.v0 import computation_pb2 as pb

    from tutorial_helpers import data, model, remote_data
    from tutorial_helpers.backends import ClientDataBackend
    from tutorial_helpers.data_service import DataService
    from tutorial_helpers.http_backend import HttpDataBackend
    from tutorial_helpers.multi_worker import create_multi_worker_context, worker_side_process
    from tutorial_helpers.round_costs import measure_rounds

    train, _ = data.load_emnist(source="sample", verbose=False)
    uris = [f"uri://{i}" for i in range(args.uris)]

    print(f"Resolving {args.uris} URIs, data service with {args.latency * 1000:.0f} ms latency per request:")
    with DataService(latency=args.latency) as service:

        async def resolve(backend, build):
            start = time.perf_counter()
            if build:
                await asyncio.gather(*(backend.materialize(pb.Data(uri=u), model.DATASET_TYPE) for u in uris))
            else:
                await asyncio.gather(*(backend.fetch(u) for u in uris))
            return time.perf_counter() - start

        asyncio.run(resolve(HttpDataBackend(service.url), build=True))  # Warm-up: TF, imports.
        for build, label in ((False, "fetch only"), (True, "fetch + build datasets")):
            sequential = asyncio.run(resolve(HttpDataBackend(service.url, max_concurrency=1), build))
            concurrent = asyncio.run(resolve(HttpDataBackend(service.url, max_concurrency=args.uris), build))
            print(f"  {label:24s} one at a time {sequential:6.3f} s | concurrent {concurrent:6.3f} s "
                  f"| {sequential / concurrent:5.1f}x faster")

    # Why a round that reads TFF's file can take longer than one fed from
    # memory: the same five clients' datasets, read to the end here (the
    # worker runs the same tf.data kernels).
    def read_all(datasets):
        start = time.perf_counter()
        count = sum(1 for d in datasets for _ in d)
        return time.perf_counter() - start, count

    with DataService(latency=0.0) as service:
        async def fetch_five(backend):
            return await asyncio.gather(
                *(backend.materialize(pb.Data(uri=u), model.DATASET_TYPE) for u in uris[:5]))

        memory_datasets = asyncio.run(fetch_five(HttpDataBackend(service.url)))
    file_datasets = [data.client_dataset(train, i) for i in range(5)]
    raw_datasets = [train.create_tf_dataset_for_client(cid) for cid in train.client_ids[:5]]
    print("Reading 5 clients' datasets to the end, in this process (median of 5 reads):")
    for label, datasets in (("from TFF's file, preprocessed", file_datasets),
                            ("from TFF's file, one raw epoch", raw_datasets),
                            ("from memory (the service's answers)", memory_datasets)):
        timings = [read_all(datasets) for _ in range(5)]
        print(f"  {label:36s} {statistics.median(t for t, _ in timings):6.3f} s, "
              f"{timings[0][1]:,} elements")

    process = model.build_fed_avg()
    handle = tff.framework.CreateDataDescriptor(uris[:5], model.DATASET_TYPE)
    client_ids = train.client_ids[:5]

    costs = []
    with DataService(latency=args.latency) as service:
        for mode, backend in {
            "datasets reading TFF's file": ClientDataBackend(train),
            "HTTP, one at a time": HttpDataBackend(service.url, max_concurrency=1),
            "HTTP, concurrent": HttpDataBackend(service.url, max_concurrency=8),
        }.items():
            with remote_data.create_execution_context(backend) as ctx:
                state = process.next(process.initialize(), handle).state  # Warm-up.
                cost, _ = measure_rounds(mode, process, state, handle, ctx, rounds=args.rounds, backend=backend)
                costs.append(cost)
    worker_side = worker_side_process(train, process)
    with create_multi_worker_context(2) as ctx:
        state = worker_side.next(worker_side.initialize(), client_ids).state
        cost, _ = measure_rounds("worker-side loading, 2 workers", worker_side, state, client_ids, ctx,
                                 rounds=args.rounds)
        costs.append(cost)
    print(f"FedAvg rounds, 5 clients ({args.rounds} timed rounds each, after one warm-up round):")
    for cost in costs:
        print(f"  {cost.mode:32s} {statistics.median(cost.seconds):6.3f} s/round (median) | "
              f"client data through the controller {statistics.median(cost.bytes_through_controller):>10,.0f} "
              f"B/round (from service {statistics.median(cost.bytes_from_service):,.0f}, "
              f"to workers {statistics.median(cost.bytes_to_workers):,.0f})")

    # DataBackend path against the same datasets passed directly, alternating.
    per_round = {"direct": [], "DataBackend": []}
    with remote_data.create_execution_context(ClientDataBackend(train)):
        state = process.next(process.initialize(), handle).state
        for _ in range(args.rounds):
            for label in per_round:
                arg = handle if label == "DataBackend" else [data.client_dataset(train, i) for i in range(5)]
                start = time.perf_counter()
                state = process.next(state, arg).state
                per_round[label].append(time.perf_counter() - start)
    direct, backend_path = (statistics.median(per_round[k]) for k in ("direct", "DataBackend"))
    print(f"DataBackend path {backend_path:.3f} s/round vs direct datasets {direct:.3f} s/round "
          f"(medians of {args.rounds}): {(backend_path / direct - 1) * 100:+.1f}% overhead")


if __name__ == "__main__":
    main()
