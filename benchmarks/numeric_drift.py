"""Why FedAvg's numbers differ between machines: measured, figures only.

    .venv/bin/python benchmarks/numeric_drift.py [--rounds N]

Trains the notebooks' Federated Averaging (the original tutorial's settings: 5 writers of the
bundled sample, client SGD 0.02, server SGD 1.0, batch 1, 5 local epochs)
in a fresh process per configuration, each changing one thing that decides
how TensorFlow adds up floats:

* nothing (twice: is one machine deterministic?);
* `TF_ENABLE_ONEDNN_OPTS=0` and `=1`: Eigen's kernels, or oneDNN's. Without
  the variable, TensorFlow 2.14 uses oneDNN only on CPUs with AVX-512
  instructions for neural networks (VNNI, BF16, AMX), Eigen elsewhere;
* oneDNN with `ONEDNN_MAX_CPU_ISA=AVX` (or `SSE41`): oneDNN as on an older
  CPU, whose narrower vector registers add up in another order;
* `TF_NUM_INTRAOP_THREADS=1`, `TF_NUM_INTEROP_THREADS=1`: one thread per op;
* one CPU (`taskset -c 0`).

For each it prints the accuracy and loss of every round, how far the model
weights after round 1 are from the first run's (0 means bit-identical), and
the final model's accuracy on notebook 04's three sets of digits.
The computation runs inside TFF's `worker_binary`, which inherits these
variables from this process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

CONFIGS = [
    ("as is", {}, []),
    ("as is, again", {}, []),
    ("TF_ENABLE_ONEDNN_OPTS=0", {"TF_ENABLE_ONEDNN_OPTS": "0"}, []),
    ("TF_ENABLE_ONEDNN_OPTS=1", {"TF_ENABLE_ONEDNN_OPTS": "1"}, []),
    ("oneDNN, as on an AVX CPU", {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX"}, []),
    ("oneDNN, as on an SSE4.1 CPU",
     {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "SSE41"}, []),
    ("1 intra-op, 1 inter-op thread",
     {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}, []),
    ("one CPU (taskset -c 0)", {}, ["taskset", "-c", "0"]),
]


def train(rounds: int, out: str) -> None:
    """Child: trains `rounds` rounds; writes metrics and each round's weights to `out`."""
    import tensorflow as tf
    import tensorflow_federated as tff

    from tutorial_helpers import data, model, remote_data
    from tutorial_helpers.backends import ClientDataBackend

    train_data, _ = data.load_emnist(source="sample", verbose=False)
    process = model.build_fed_avg()
    handle = tff.framework.CreateDataDescriptor(
        [f"uri://{i}" for i in range(5)], model.DATASET_TYPE
    )
    metrics, weights = [], []
    with remote_data.create_execution_context(ClientDataBackend(train_data)):
        state = process.initialize()
        for _ in range(rounds):
            result = process.next(state, handle)
            state = result.state
            train_metrics = result.metrics["client_work"]["train"]
            metrics.append([float(train_metrics["sparse_categorical_accuracy"]),
                            float(train_metrics["loss"])])
            weights.append(np.concatenate(
                [np.ravel(w) for w in process.get_model_weights(state).trainable]))
        # Inside the context: outside it, TFF would start a worker of its own,
        # which outlives this process.
        final_weights = process.get_model_weights(state)
    # Notebook 04's evaluation of the final model, on its three sets of digits.
    _, test_data = data.load_emnist(source="sample", verbose=False)
    keras_model = model.create_keras_model()
    keras_model.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(),
                        metrics=[tf.keras.metrics.SparseCategoricalAccuracy()])
    final_weights.assign_weights_to(keras_model)
    trained, unseen = train_data.client_ids[:5], train_data.client_ids[5:]
    sets = {
        "training digits": [(train_data, trained)],
        "held-out digits": [(test_data, trained)],
        "unseen writers": [(train_data, unseen), (test_data, [c for c in test_data.client_ids
                                                              if c in unseen])],
    }
    evaluation = {}
    for name, parts in sets.items():
        batches = [b for client_data, ids in parts for cid in ids for b in
                   client_data.create_tf_dataset_for_client(cid).batch(256).as_numpy_iterator()]
        x = np.concatenate([b["pixels"].reshape(-1, 784) for b in batches])
        y = np.concatenate([b["label"] for b in batches])
        evaluation[name] = float(keras_model.evaluate(x, y, batch_size=256, verbose=0)[1])
    np.savez(out, weights=np.stack(weights), metrics=json.dumps(metrics),
             evaluation=json.dumps(evaluation))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return train(args.rounds, args.child)

    with open("/proc/cpuinfo") as f:
        cpuinfo = f.read()
    model_name = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                       if line.startswith("model name")), "unknown")
    flags = sorted({flag for flag in cpuinfo.split() if flag.startswith("avx")})
    print(f"CPU: {model_name}; {os.cpu_count()} cores; vector extensions: {' '.join(flags)}\n")
    print(f"{'configuration':32s} " + "  ".join(f"round {r}: acc   loss" for r in
                                                  range(1, args.rounds + 1))
          + "   max |w1 - w1(as is)|")
    reference, evaluations = None, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, env, prefix in CONFIGS:
            if prefix and not shutil.which(prefix[0]):
                print(f"{name:32s} (skipped: no {prefix[0]})")
                continue
            out = os.path.join(tmp, "run.npz")
            subprocess.run(
                [*prefix, sys.executable, __file__, f"--rounds={args.rounds}", f"--child={out}"],
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env}, check=True,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            with np.load(out) as result:
                weights, metrics = result["weights"], json.loads(str(result["metrics"]))
                evaluations[name] = json.loads(str(result["evaluation"]))
            if reference is None:
                reference = weights
            drift = float(np.max(np.abs(weights[0] - reference[0])))
            print(f"{name:32s} "
                  + "  ".join(f"{acc:14.4f} {loss:6.3f}" for acc, loss in metrics)
                  + f"   {drift:.1e}" + (" (bit-identical)" if drift == 0 else ""))
    print("\nthe final model's accuracy on notebook 04's three sets of digits:")
    print(f"{'configuration':32s} " + "  ".join(f"{name:>16s}" for name in next(iter(evaluations.values()))))
    for name, evaluation in evaluations.items():
        print(f"{name:32s} " + "  ".join(f"{value:16.4f}" for value in evaluation.values()))


if __name__ == "__main__":
    main()
