"""What running the notebooks two at a time buys: scripts/run_tutorial one by one, then two at a time.

    .venv/bin/python benchmarks/run_tutorial.py [--jobs 1 2] [NOTEBOOK ...]

Runs `scripts/run_tutorial` once per number of jobs (KIT_TUTORIAL_JOBS), each
into a build folder of its own, in one sitting, and prints for each: the wall
time, and the peak memory of everything it started (the sum of the resident
memory of the script's whole process tree, kernels and TFF workers included,
sampled every 0.2 s). Then the speed-up of the last over the first. Run it on
a quiet machine: another job on the same cores changes both figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def tree_rss(pid: int) -> int:
    """Resident bytes of process `pid` and all its descendants (those that could be read)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return total


def run(jobs: int, notebooks: list[str], build: Path) -> tuple[float, int, str]:
    """(seconds, peak bytes, the script's output) of one run of scripts/run_tutorial with `jobs`."""
    env = {**os.environ, "KIT_TUTORIAL_JOBS": str(jobs), "BUILD_DIR": str(build)}
    start = time.monotonic()
    child = subprocess.Popen([str(ROOT / "scripts" / "run_tutorial"), *notebooks], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss(child.pid))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = child.communicate()[0]
    done.set()
    sampler.join()
    if child.returncode != 0:
        raise SystemExit(f"run_tutorial with {jobs} job(s) failed:\n{output[-3000:]}")
    return time.monotonic() - start, peak[0], output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="numbers of notebooks at a time")
    parser.add_argument("notebooks", nargs="*", help="the notebooks (default: all, as run_tutorial runs them)")
    args = parser.parse_args(argv)
    if any(jobs < 1 for jobs in args.jobs):
        parser.error("--jobs: each must be at least 1")
    results = []
    with tempfile.TemporaryDirectory(prefix="kit-bench-tutorial-") as scratch:
        for jobs in args.jobs:
            seconds, peak, output = run(jobs, args.notebooks, Path(scratch) / f"jobs-{jobs}")
            times = [line.split("run_tutorial: executed ", 1)[1] for line in output.splitlines()
                     if line.startswith("run_tutorial: executed ")]
            print(f"{jobs} at a time: {seconds:.0f} s, peak memory {peak / 2**30:.1f} GiB")
            for line in times:
                print(f"    {line.split(' -> ')[0]}")
            results.append((jobs, seconds, peak))
            sys.stdout.flush()
    if len(results) > 1:
        (first_jobs, first, first_peak), (last_jobs, last, last_peak) = results[0], results[-1]
        print(f"{last_jobs} at a time against {first_jobs}: {first / last:.2f}x as fast, "
              f"{last_peak / max(first_peak, 1):.2f}x the peak memory")
    return 0


if __name__ == "__main__":
    sys.exit(main())
