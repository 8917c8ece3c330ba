"""What a site's limits buy and cost (notebook 09): the curious controller's reconstruction, accuracy, epsilon, time.

One site (the clinic, twelve writers of the bundled sample, one of them with a
single example) behind its gatekeeper; every figure is printed:

* the reconstruction of the one-example writer's digit (its similarity, the
  correlation with the site's own image) against the cohort size k, with
  notebook 04's Federated Averaging and no limits; and by the difference of
  two rounds that differ by that writer, against the site's noise sigma;
* accuracy on the test writers after ten rounds of ten writers, against sigma
  (updates clipped at C = 5);
* the epsilon the site has spent after each of those rounds (delta 1e-5);
* the time of a round with the gatekeeper's noise against one without a
  gatekeeper, as a ratio in one run (medians of five rounds each).

Noise comes from the operating system: each run gives other numbers for sigma
above 0; run it a few times to see the spread. About three minutes on two cores.
With --figure PATH it also draws the privacy-utility curve (accuracy against
epsilon, and the reconstruction against sigma) into PATH, as
notebooks/images/09_privacy_utility.png was.

    .venv/bin/python benchmarks/site_privacy.py [--figure notebooks/images/09_privacy_utility.png]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402, F401
import tensorflow_federated as tff  # noqa: E402

from tutorial_helpers import curious_controller as cc  # noqa: E402
from tutorial_helpers import data  # noqa: E402
from tutorial_helpers.runtime.processes import temporary_folder  # noqa: E402
from tutorial_helpers.sites import (  # noqa: E402
    build_site_dp_fed_avg,
    build_site_fed_avg,
    create_site_context,
    dp_fed_avg_computations,
    examples_at_site,
    fed_avg_computations,
    write_site,
)
from tutorial_helpers.sites.gatekeeper import Gatekeeper, approve, pin  # noqa: E402
from tutorial_helpers.sites.gatekeeper.release import epsilon_spent  # noqa: E402

SIGMAS = (0.0, 0.01, 0.1, 1.0)
CLIP = 5.0


def limits(folder: Path, sigma: float) -> None:
    (folder / "limits.txt").write_text(f"noise_multiplier = {sigma!r}\n" if sigma else "")


def draw(path: str, accuracy: dict[float, float], epsilon: dict[float, float], found: dict[float, float]) -> None:
    """Accuracy against epsilon (sigma 0 drawn at the right edge, as no bound), and the reconstruction against sigma."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.3))
    noisy = [s for s in SIGMAS if s]
    edge = max(epsilon[s] for s in noisy) * 10
    xs = [epsilon[s] if s else edge for s in SIGMAS]
    left.plot(xs, [accuracy[s] for s in SIGMAS], "o-")
    for s, x in zip(SIGMAS, xs, strict=True):
        left.annotate(f"sigma {s:g}" if s else "no noise", (x, accuracy[s]), textcoords="offset points",
                      xytext=(-20, -14) if s == 0 else (4, 6), fontsize=8)
    left.axhline(0.1, color="gray", linestyle=":", linewidth=1)
    left.set(xscale="log", xlabel="epsilon after 10 rounds (delta 1e-5; no noise: no bound)",
             ylabel="accuracy on the test writers", ylim=(0, 1), title="What the noise costs")
    right.plot([s if s else 1e-3 for s in SIGMAS], [found[s] for s in SIGMAS], "o-")
    right.axhline(0, color="gray", linestyle=":", linewidth=1)
    right.set(xscale="log", xlabel="sigma (no noise drawn at 0.001)", ylabel="similarity to the site's image",
              ylim=(-0.2, 1.05), title="The difference of two rounds")
    fig.suptitle("One clinic, 12 writers, updates clipped at 5 (benchmarks/site_privacy.py)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--figure", help="where to draw the privacy-utility curve (a .png)")
    args = parser.parse_args()
    accuracy, epsilon, found = {}, {}, {}
    train, test = data.load_emnist(source="sample")
    sizes = {c: len(list(train.create_tf_dataset_for_client(c))) for c in train.client_ids}
    lonely = min(sizes, key=lambda c: (sizes[c], c))
    others = [c for c in train.client_ids if c != lonely and 50 <= sizes[c]][:11]
    folder = temporary_folder("benchmark")
    root, keeper = Path(folder.name) / "clinic", Path(folder.name) / "keeper"
    write_site(train, [lonely, *others], root, canary=b"canary of the benchmark's clinic")
    approve(keeper, {**fed_avg_computations(), **dp_fed_avg_computations()})
    pin(keeper, {"clipping_norm": CLIP})
    truth = examples_at_site(root, [lonely])[lonely][0][0]
    test_digits = list(test.create_tf_dataset_from_all_clients().as_numpy_iterator())
    test_x = np.stack([d["pixels"].reshape(784) for d in test_digits])
    test_y = np.array([d["label"] for d in test_digits])
    with create_site_context(roots={"clinic": root}, gatekeepers={"clinic": Gatekeeper(keeper, site="clinic")}) as ctx:
        tff.framework.set_default_context(ctx)
        fed_avg = build_site_fed_avg()
        state = fed_avg.initialize()
        before = fed_avg.get_model_weights(state).trainable
        label = None
        print("reconstruction against the cohort size k (no limits): similarity to the site's image")
        for k in (1, 2, 4, 8):
            after = fed_avg.get_model_weights(fed_avg.next(state, [lonely, *others[:k - 1]]).state).trainable
            update = cc.update_between(before, after)
            label = int(np.argmax(np.abs(update[1]))) if label is None else label
            print(f"  k = {k}: {cc.similarity(cc.digit_from_update(update, label), truth):.3f}")

        print(f"difference of two rounds ({{lonely, a, b}} - {{a, b}}), clipped at C = {CLIP}, against sigma")
        private = build_site_dp_fed_avg(clipping_norm=CLIP, clients_per_round=1)
        start_state = private.initialize()
        start = private.get_model_weights(start_state).trainable
        for sigma in SIGMAS:
            limits(keeper, sigma)
            sums = [cc.update_between(start, private.get_model_weights(private.next(start_state, cohort).state)
                                      .trainable) for cohort in ([lonely, *others[:2]], others[:2])]
            found[sigma] = cc.similarity(cc.digit_from_update(cc.difference(*sums), label), truth)
            print(f"  sigma = {sigma:g}: {found[sigma]:.3f}")

        print("accuracy on the test writers after 10 rounds of 10 writers, and epsilon spent (delta 1e-5)")
        trainer = build_site_dp_fed_avg(clipping_norm=CLIP, clients_per_round=10)
        for sigma in SIGMAS:
            limits(keeper, sigma)
            state = trainer.initialize()
            for r in range(10):
                state = trainer.next(state, sorted([lonely, *others])[r % 2:][:10]).state
            kernel, bias = trainer.get_model_weights(state).trainable
            accuracy[sigma] = float(np.mean(np.argmax(test_x @ kernel + bias, axis=1) == test_y))
            epsilon[sigma] = epsilon_spent([sigma] * 10, 1e-5) if sigma else float("inf")
            bound = f"{epsilon[sigma]:,.1f}" if sigma else "no bound"
            print(f"  sigma = {sigma:g}: accuracy {accuracy[sigma]:.3f}, epsilon after 10 rounds {bound}")

        limits(keeper, 1.0)
        gated = []
        for _ in range(5):
            started = time.perf_counter()
            trainer.next(trainer.initialize(), sorted(others)[:10])
            gated.append(time.perf_counter() - started)
    with create_site_context(roots={"clinic": root}) as plain:
        tff.framework.set_default_context(plain)
        bare = []
        for _ in range(5):
            started = time.perf_counter()
            trainer.next(trainer.initialize(), sorted(others)[:10])
            bare.append(time.perf_counter() - started)
    ratio = statistics.median(gated) / statistics.median(bare)
    print(f"a round of 10 writers: {statistics.median(bare):.2f} s without a gatekeeper, "
          f"{statistics.median(gated):.2f} s through its gatekeeper, adding noise: ratio {ratio:.2f}")
    folder.cleanup()
    if args.figure:
        draw(args.figure, accuracy, epsilon, found)
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
