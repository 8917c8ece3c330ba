"""Shared fixtures, and the check that no kit process outlives the test session."""

import os
import re
import shutil
import signal
import tempfile
import uuid

import psutil
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# Every process this test session starts, directly or through a notebook's
# kernel, inherits this mark; the leak check looks only at marked processes,
# so other sessions on the machine are neither blamed nor stopped.
SESSION_MARK_NAME, SESSION_MARK_VALUE = "TUTORIAL_HELPERS_TEST_SESSION", uuid.uuid4().hex
os.environ[SESSION_MARK_NAME] = SESSION_MARK_VALUE
# A kit process is TFF's worker or a kit module run with `python -m`, found
# anywhere in the command line, so also behind wrappers such as
# `python -m tutorial_helpers.runtime.launcher ... -- .../worker_binary --port=N`.
# TFF's own local context names the binary through "executor_stacks/../../../../data/".
KIT_COMMAND = re.compile(
    r"tensorflow_federated/\S*data/worker_binary|(?:^|\s)-m\s*tutorial_helpers\.\w"
)


def is_kit_command(cmdline: list[str]) -> bool:
    """Whether a process's argument list runs TFF's worker or a `tutorial_helpers` module."""
    return KIT_COMMAND.search(" ".join(cmdline)) is not None


def worker_pids() -> set[int]:
    """Pids of this session's running kit processes (TFF workers, data services, launchers).

    Only live processes (not zombies) whose command line `is_kit_command` and
    whose environment carries this session's mark count; processes that are
    gone, or that this user may not inspect, are skipped. Uses psutil, not
    `pgrep` or /proc paths, so it works on images without procps.
    """
    pids = set()
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            if process.status() == psutil.STATUS_ZOMBIE or not is_kit_command(process.cmdline()):
                continue
            if process.environ().get(SESSION_MARK_NAME) == SESSION_MARK_VALUE:
                pids.add(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):  # Gone, or not ours to read.
            continue
    return pids


def pytest_sessionstart(session):
    session.config.stash["workers_before"] = worker_pids()


def pytest_sessionfinish(session, exitstatus):
    leaked = worker_pids() - session.config.stash.get("workers_before", set())
    if leaked:
        commands = {}
        for pid in leaked:  # Stop them, so a pipe reader (CI) is not left waiting.
            try:
                commands[pid] = " ".join(psutil.Process(pid).cmdline())[:300]
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, psutil.Error):
                pass
        print(f"\nFAILED: kit processes (TFF workers, data services) outlived the test session: {sorted(leaked)}")
        for pid, command in sorted(commands.items()):
            print(f"  {pid}: {command}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def emnist(tmp_path_factory):
    """The bundled sample, written once per session into a fresh cache dir."""
    from tutorial_helpers import data

    return data.load_emnist(source="sample", cache_dir=tmp_path_factory.mktemp("cache"))


CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromedriver")
INSTALL = "sudo apt-get install chromium chromium-driver"


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium driven by selenium (Debian's chromium and chromedriver); skips, saying how, without it."""
    missing = [path for path in CHROMIUM if not os.access(path, os.X_OK)]
    if missing:
        message = f"no Chromium for the browser test ({', '.join(missing)} missing): {INSTALL}"
        if os.environ.get("KIT_REQUIRE_BROWSER") == "1":  # .ci/run: CI must open the pages.
            pytest.fail(message + " (KIT_REQUIRE_BROWSER=1)")
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM[0]
    profile = tempfile.mkdtemp(prefix="kit-chromium-")
    # The flags that keep Chromium from calling home on a closed network.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1600", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(options=options, service=Service(CHROMIUM[1]))
        try:
            driver.set_page_load_timeout(60)
            yield driver
        finally:
            driver.quit()  # Stops Chromium and chromedriver.
    finally:
        shutil.rmtree(profile, ignore_errors=True)
