"""Shared fixtures, and the check that no kit process outlives the test session."""

import os
import re
import shutil
import signal
import sys
import tempfile
import uuid

import psutil
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# Every process this test session starts, directly or through a notebook's
# kernel, inherits this mark; the leak check looks only at marked processes,
# so other sessions on the machine are neither blamed nor stopped. With
# pytest-xdist (scripts/run_tests), the workers are children of one
# controller and share its mark; only the controller checks, at the very end.
SESSION_MARK_NAME, SESSION_PID_NAME = "TUTORIAL_HELPERS_TEST_SESSION", "TUTORIAL_HELPERS_TEST_SESSION_PID"
XDIST_WORKER = bool(os.environ.get("PYTEST_XDIST_WORKER")) and os.environ.get(SESSION_PID_NAME) == str(os.getppid())
if not XDIST_WORKER:
    os.environ[SESSION_MARK_NAME], os.environ[SESSION_PID_NAME] = uuid.uuid4().hex, str(os.getpid())
SESSION_MARK_VALUE = os.environ[SESSION_MARK_NAME]
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
    if XDIST_WORKER:  # The controller checks for every worker, once they have all ended.
        return
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


# --- tiers ------------------------------------------------------------------
#
# Each test is marked by what it uses (pyproject.toml lists the markers): a child process, a Jupyter
# kernel, the browser, an install, root. `scripts/run_tests --fast` runs the tests that use none of
# them, and sets KIT_TIER=fast; then any test that starts a process anyway fails, naming what it
# started, so a test missing its mark is caught instead of slowing the fast tier down.
RESOURCES = ("process", "notebook", "browser", "install", "root")
# Run one at a time (on one xdist worker, one after the other): they make users and namespaces, or
# drive the browser.
ALONE = ("root", "browser")
_SPAWNS = ("subprocess.Popen", "os.posix_spawn", "os.fork", "os.forkpty", "os.exec", "os.system")
_guard = {"item": None, "started": {}}


def _no_process_in_the_fast_tier(event, args):
    item = _guard["item"]
    if item is None or event not in _SPAWNS:
        return
    what = f"{event} {str(args)[:160]}"
    _guard["started"].setdefault(item.nodeid, what)
    raise RuntimeError(f"{item.nodeid} started a process in the fast tier ({what}): mark it "
                       f"@pytest.mark.process (or notebook, browser, install, root), or do without the process.")


FAST_TIER = os.environ.get("KIT_TIER") == "fast"
if FAST_TIER:
    sys.addaudithook(_no_process_in_the_fast_tier)  # For this process's life: it acts only while a test runs.


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _guard["item"] = item if FAST_TIER else None
    try:
        yield
    finally:
        _guard["item"] = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    started = _guard["started"].get(item.nodeid)
    if started and report.when == "call" and not report.failed:  # Even if the test caught the error.
        report.outcome = "failed"
        report.longrepr = f"the fast tier starts no process, and this test did: {started}"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Groups for pytest-xdist's loadgroup: a file's tests (or a notebook's cells) stay together, in order,
    on one worker, sharing the file's fixtures; the files that hold a test that must run alone (root,
    browser) share one group, so that those tests run one after the other."""
    def file_of(item) -> str:
        return item.nodeid.split("::")[0]

    alone = {file_of(item) for item in items if any(item.get_closest_marker(name) for name in ALONE)}
    for item in items:
        item.add_marker(pytest.mark.xdist_group("alone" if file_of(item) in alone else file_of(item)))


@pytest.fixture(scope="session")
def emnist(tmp_path_factory):
    """The bundled sample, written once per session into a fresh cache dir."""
    from tutorial_helpers import data

    return data.load_emnist(source="sample", cache_dir=tmp_path_factory.mktemp("cache"))


CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromedriver")
INSTALL = "sudo apt-get install chromium chromium-driver"


@pytest.fixture
def browser():
    """A new headless Chromium for each test, with a new empty profile; skips, saying how, without it.

    Debian's chromium and chromedriver, driven by selenium. Each test gets its
    own: a page that one test left open (JupyterLab's unload prompt, a console
    message, a service worker) cannot reach the next test's checks.
    """
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
