"""Shared fixtures, and the check that no kit process outlives the test session."""

import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# Every process this test session starts, directly or through a notebook's
# kernel, inherits this mark; the leak check looks only at marked processes,
# so other sessions on the machine are neither blamed nor stopped.
SESSION_MARK = f"TUTORIAL_HELPERS_TEST_SESSION={uuid.uuid4().hex}"
os.environ["TUTORIAL_HELPERS_TEST_SESSION"] = SESSION_MARK.split("=", 1)[1]
KIT_PROCESSES = "tensorflow_federated/data/worker_binary|tutorial_helpers.data_service"


def worker_pids(pattern: str = KIT_PROCESSES) -> set[int]:
    """Pids of this session's running kit processes (TFF workers, data services)."""
    out = subprocess.run(
        ["pgrep", "-f", pattern], capture_output=True, text=True, check=False
    ).stdout
    pids = set()
    for pid in map(int, out.split()):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:  # Gone already.
            continue
        if SESSION_MARK.encode() in environ and pid != os.getpid():
            pids.add(pid)
    return pids


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
        print(f"\nFAILED: kit processes (TFF workers, data services) outlived the test session: {sorted(leaked)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def emnist(tmp_path_factory):
    """The bundled sample, written once per session into a fresh cache dir."""
    from tutorial_helpers import data

    return data.load_emnist(source="sample", cache_dir=tmp_path_factory.mktemp("cache"))
