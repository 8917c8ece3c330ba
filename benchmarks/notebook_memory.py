"""Prints each notebook's peak memory while it runs: figures only, no pass/fail.

    .venv/bin/python benchmarks/notebook_memory.py [notebooks/NAME.ipynb ...]

Runs each notebook (all of notebooks/ by default) top to bottom in a fresh
kit kernel, as scripts/run_tutorial does, in a temporary folder, and samples
twice a second the memory of the kernel and of every process it started (TFF
workers, data services). Memory is the proportional set size (PSS): pages
shared between processes are split between them, so the sum is what the
processes take together, as a container's memory limit counts it (mybinder.org
allows about 2 GB). The Jupyter server or nbconvert itself is not included.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from tutorial_helpers import KERNEL_NAME

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


def tree_memory(root: psutil.Process) -> tuple[int, int, int]:
    """(PSS of root's descendants, PSS of the largest one, how many), in bytes."""
    total, largest, count = 0, 0, 0
    for process in root.children(recursive=True):
        try:
            pss = process.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total, largest, count = total + pss, max(largest, pss), count + 1
    return total, largest, count


def run(notebook: Path, interval: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="kit-memory-") as folder:
        copy = Path(folder) / notebook.name
        shutil.copy(notebook, copy)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        start = time.monotonic()
        # Run where the notebook is: the IPC sockets' paths are relative.
        nbconvert = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "jupyter"), "nbconvert", "--log-level=ERROR", "--to", "notebook",
             "--execute", "--inplace", "--KernelManager.transport=ipc",
             f"--ExecutePreprocessor.kernel_name={KERNEL_NAME}", "--ExecutePreprocessor.timeout=900",
             copy.name],
            cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        root = psutil.Process(nbconvert.pid)
        peak, peak_largest, peak_count = 0, 0, 0
        while nbconvert.poll() is None:
            total, largest, count = tree_memory(root)
            if total > peak:
                peak, peak_largest, peak_count = total, largest, count
            time.sleep(interval)
        stderr = nbconvert.stderr.read()
        return {"seconds": time.monotonic() - start, "peak": peak, "largest": peak_largest,
                "processes": peak_count, "ok": nbconvert.returncode == 0, "stderr": stderr}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook in notebooks/")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    args = parser.parse_args()
    notebooks = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for notebook in notebooks:
        if not notebook.is_file():
            sys.exit(f"notebook_memory: no notebook {notebook}")
    print(f"{'notebook':32s} {'peak MiB':>9s} {'largest process MiB':>20s} {'processes':>9s} {'run s':>6s}")
    for notebook in notebooks:
        result = run(notebook, args.interval)
        status = "" if result["ok"] else "  FAILED: " + result["stderr"].strip().splitlines()[-1][:120]
        print(f"{notebook.stem:32s} {result['peak'] / MIB:9.0f} {result['largest'] / MIB:20.0f} "
              f"{result['processes']:9d} {result['seconds']:6.0f}{status}", flush=True)


if __name__ == "__main__":
    main()
