"""The fast tier's guard: a test in it that starts a process fails, naming the process, even if it caught the error."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

UNMARKED = textwrap.dedent('''
    import subprocess

    def test_starts_a_process():
        subprocess.run(["true"], check=True)

    def test_starts_a_process_and_hides_the_error():
        try:
            subprocess.run(["true"], check=True)
        except RuntimeError:
            pass

    def test_starts_nothing():
        assert sum(range(4)) == 6
''')


def run_pytest(folder: Path, tier: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("KIT_TIER", "PYTEST_XDIST_WORKER")}
    if tier is not None:
        env["KIT_TIER"] = tier
    return subprocess.run([sys.executable, "-m", "pytest", str(folder), "-p", "tests.conftest", "-p",
                           "no:cacheprovider", "-q", "--rootdir", str(folder)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.process
def test_the_fast_tier_fails_a_test_that_starts_a_process_and_the_full_tier_does_not(tmp_path):
    (tmp_path / "test_unmarked.py").write_text(UNMARKED)
    fast = run_pytest(tmp_path, "fast")
    assert "2 failed, 1 passed" in fast.stdout, fast.stdout + fast.stderr
    assert "started a process in the fast tier (subprocess.Popen" in fast.stdout
    assert "the fast tier starts no process, and this test did" in fast.stdout  # The error it hid.
    full = run_pytest(tmp_path, None)  # The control: the same tests, outside the fast tier.
    assert "3 passed" in full.stdout, full.stdout + full.stderr
