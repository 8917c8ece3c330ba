"""Shared fixtures, and the check that no TFF worker outlives the test session."""

import os
import signal
import subprocess

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def worker_pids() -> set[int]:
    """Pids of running TFF `worker_binary` processes on this machine."""
    out = subprocess.run(
        ["pgrep", "-f", "tensorflow_federated/data/worker_binary"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return {int(pid) for pid in out.split()} - {os.getpid()}


def pytest_sessionstart(session):
    session.config.stash["workers_before"] = worker_pids()


def pytest_sessionfinish(session, exitstatus):
    leaked = worker_pids() - session.config.stash.get("workers_before", set())
    if leaked:
        for pid in leaked:  # Stop them, so a pipe reader (CI) is not left waiting.
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        print(f"\nFAILED: TFF worker processes outlived the test session: {sorted(leaked)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def emnist(tmp_path_factory):
    """The bundled sample, written once per session into a fresh cache dir."""
    from tutorial_helpers import data

    return data.load_emnist(source="sample", cache_dir=tmp_path_factory.mktemp("cache"))
