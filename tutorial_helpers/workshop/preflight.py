"""Is this machine ready for the workshop? `scripts/preflight` runs these checks.

Each check prints one line, "ok", "note" (works, but read this) or "FIX"
(what to do), and the run ends with "ready" or the number of things to fix.
The checks: the platform, the Python (and where it came from), the user
(root or not), free disk, the kit's Jupyter kernel, HTTPS to the package
index with this machine's certificates, local ports, JupyterLab (started for
real, on loopback), private networks for TFF's workers, and one real round of
Federated Averaging through a data backend, checked against the reference
run. The decisions are plain functions of the facts, so they are tested with
the facts given (tests/test_preflight.py).
"""

from __future__ import annotations

import contextlib
import getpass
import http.client
import io
import json
import os
import platform
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import portpicker

from tutorial_helpers import KERNEL_DISPLAY_NAME, KERNEL_NAME
from tutorial_helpers.runtime.processes import (
    ManagedProcess,
    network_addresses,
    private_network_status,
    uncontained_policy,
)

ROOT = Path(__file__).resolve().parents[2]  # The kit: tutorial_helpers/workshop/ is two down.
MIN_FREE_GB = 1.0  # The sample data and the notebooks' outputs take tens of MB; TF's caches more.


@dataclass
class Result:
    status: str  # "ok", "note" or "FIX"
    what: str
    message: str


def check_platform(system: str, machine: str) -> Result:
    if system == "Linux" and machine in ("x86_64", "AMD64"):
        return Result("ok", "platform", f"{system} {machine}")
    return Result("FIX", "platform", f"{system} {machine}: TFF 0.87 ships only for Linux x86-64. Use the "
                  "kit's container, Binder, or a Linux x86-64 machine (README.md, 'Other ways to install').")


def check_python(version: tuple[int, int], base_prefix: str = "") -> Result:
    if version == (3, 11):
        if Path(base_prefix).resolve().is_relative_to(ROOT / ".kit-tools"):
            return Result("ok", "python", "Python 3.11, a managed CPython that scripts/setup installed into "
                          ".kit-tools/python because the machine has no 3.11 of its own")
        return Result("ok", "python", "Python 3.11")
    return Result("FIX", "python", f"Python {version[0]}.{version[1]}: the kit's environment is Python 3.11. "
                  "Run scripts/setup with PYTHON=/path/to/python3.11.")


def check_user(euid: int, name: str) -> Result:
    if euid != 0:
        return Result("ok", "user", f"running as {name}, not root")
    return Result("note", "user", "running as root. Learners do not: what root writes (caches, the clone's "
                  "build/) an ordinary user cannot change later, and Jupyter refuses root without --allow-root. "
                  "Try the kit as the user who will run the workshop.")


# Where setup installs from: the first index the learner configured, else PyPI.
INDEX_VARIABLES = ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL")


def index_url() -> str:
    return next((os.environ[v] for v in INDEX_VARIABLES if os.environ.get(v)), "https://pypi.org/")


def _without_credentials(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def check_certificates(url: str | None = None, timeout: float = 10) -> Result:
    """HTTPS to the package index, verified with this machine's certificates (as pip, and uv in setup, do)."""
    url = url or index_url()
    shown = _without_credentials(url)  # An index address may carry a token.
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ssl.create_default_context()):
            pass
    except urllib.error.HTTPError as e:  # An answer: TLS worked.
        return Result("ok", "certificates", f"HTTPS to {shown} verified with this machine's certificates "
                      f"(it answered HTTP {e.code})")
    except (OSError, ValueError, http.client.HTTPException) as e:
        # URLError, a timeout, a reset connection; a malformed address (InvalidURL).
        reason = getattr(e, "reason", e)
        if isinstance(reason, ssl.SSLCertVerificationError):
            return Result("FIX", "certificates", f"{shown} presents a certificate this machine does not trust "
                          f"({reason.verify_message}). Behind a TLS-inspecting proxy, add the proxy's "
                          "certificate to the system's store (Debian/Ubuntu: copy it to "
                          "/usr/local/share/ca-certificates/ as a .crt file, then sudo update-ca-certificates), "
                          "or point SSL_CERT_FILE at a bundle that has it; setup makes uv use the same store.")
        reason = str(reason).replace(url, shown)
        return Result("note", "certificates", f"{shown} is out of reach ({reason}): fine once set up, or "
                      "offline with KIT_WHEELHOUSE; setup needs it for a first install or a changed lock.")
    return Result("ok", "certificates", f"HTTPS to {shown} verified with this machine's certificates")


def check_disk(free_bytes: int, path: Path) -> Result:
    free_gb = free_bytes / 1e9
    if free_gb >= MIN_FREE_GB:
        return Result("ok", "disk", f"{free_gb:.1f} GB free at {path}")
    return Result("FIX", "disk", f"only {free_gb:.2f} GB free at {path}: free at least {MIN_FREE_GB:g} GB.")


def check_kernel(kernelspecs: dict) -> Result:
    spec = kernelspecs.get(KERNEL_NAME)
    if spec is None:
        return Result("FIX", "kernel", f"the Jupyter kernel '{KERNEL_NAME}' is not registered: run scripts/setup.")
    argv = spec.get("spec", {}).get("argv", [""])
    if Path(argv[0]).resolve() != Path(sys.executable).resolve():
        return Result("FIX", "kernel", f"the kernel '{KERNEL_NAME}' runs {argv[0]}, not this clone's "
                      f"{sys.executable}: run scripts/setup again.")
    return Result("ok", "kernel", f"'{KERNEL_DISPLAY_NAME}' runs this clone's .venv")


def check_jupyterlab(started: bool, problem: str, as_root: bool = False) -> Result:
    if not started:
        lines = problem.strip().splitlines() or ["no output"]
        what = lines[0] if len(lines) == 1 else f"{lines[0].rstrip(':')}: {lines[-1]}"
        return Result("FIX", "jupyterlab", f"`.venv/bin/jupyter lab` did not start ({what}): run scripts/setup "
                      "again; if it persists, report the line above.")
    if as_root:
        return Result("note", "jupyterlab", "`.venv/bin/jupyter lab` starts, but this user is root, which Jupyter "
                      "refuses: start it as an ordinary user, or add --allow-root.")
    return Result("ok", "jupyterlab", "`.venv/bin/jupyter lab` starts and answers on 127.0.0.1")


@contextlib.contextmanager
def jupyterlab_server(timeout: float = 60, notebook_dir: Path | None = None, extra_args: tuple[str, ...] = (),
                      ) -> Iterator[tuple[str, str, ManagedProcess]]:
    """Starts the kit's JupyterLab on 127.0.0.1 with a token, as the README does; stops it on leaving.

    It serves `notebook_dir` (by default the kit's notebooks), with `extra_args`
    added to its command line.

    Yields (base URL, token, the server's ManagedProcess, whose log_tail()
    shows its output). Raises RuntimeError if it exits, TimeoutError if it
    does not answer within `timeout` seconds, each with the end of its log.
    Run as root, it passes --allow-root, without which Jupyter refuses to start.
    """
    port, token = portpicker.pick_unused_port(), uuid.uuid4().hex
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="kit-jupyterlab-") as runtime:
        server = ManagedProcess(
            [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--ip=127.0.0.1",
             f"--port={port}", "--ServerApp.port_retries=0",  # That port or none: `base` must be right.
             f"--ServerApp.runtime_dir={runtime}", f"--IdentityProvider.token={token}",
             str(notebook_dir or ROOT / "notebooks"), *extra_args,
             *(["--allow-root"] if os.geteuid() == 0 else [])],
            description="JupyterLab",
        )
        try:
            server.wait_for_http(f"{base}/api/status?token={token}", timeout)
            yield base, token, server
        finally:
            server.stop()


def jupyterlab_starts() -> tuple[bool, str]:
    """(whether the kit's JupyterLab starts and answers, what went wrong if not)."""
    try:
        with jupyterlab_server():
            return True, ""
    except (RuntimeError, OSError) as e:
        return False, str(e)


def check_local_port() -> Result:
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            port = s.getsockname()[1]
            # Binding works with the loopback interface down; connecting does not.
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
    except OSError as e:
        return Result("FIX", "ports", f"cannot open a port on 127.0.0.1 and connect to it ({e}): JupyterLab and "
                      "the data service need one. Is the loopback interface up (ip link set lo up)?")
    return Result("ok", "ports", f"127.0.0.1 ports can be opened (e.g. {port})")


def check_private_network(contained: bool, reason: str, *, in_container: bool = False,
                          addresses: list[str] | None = None) -> Result:
    if contained:
        return Result("ok", "private network", "TFF workers run in a network of their own")
    allowed, message = uncontained_policy(reason, in_container=in_container,
                                          addresses=[] if addresses is None else addresses)
    return Result("note" if allowed else "FIX", "private network", message)


def check_training(history, seconds: float) -> Result:
    from tutorial_helpers import expected_results

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # Its "on track" line; ours says it.
            expected_results.check_training(history)
    except AssertionError as e:
        return Result("FIX", "training", f"one FedAvg round is off the reference run: {e}")
    return Result("ok", "training", f"one FedAvg round through a DataBackend, on track ({seconds:.0f} s with start-up)")


def run_one_round():
    """Trains one round as notebook 04 does; returns its metrics history."""
    import tensorflow_federated as tff

    from tutorial_helpers import data, model, remote_data
    from tutorial_helpers.backends import ClientDataBackend

    train, _ = data.load_emnist(source="sample", verbose=False)
    process = model.build_fed_avg()
    handle = tff.framework.CreateDataDescriptor([f"uri://{i}" for i in range(5)], model.DATASET_TYPE)
    with remote_data.create_execution_context(ClientDataBackend(train)):
        return [process.next(process.initialize(), handle).metrics]


def kernelspecs() -> dict:
    listing = subprocess.run([str(Path(sys.executable).parent / "jupyter"), "kernelspec", "list", "--json"],
                             capture_output=True, text=True, timeout=60, check=False)
    return json.loads(listing.stdout).get("kernelspecs", {}) if listing.returncode == 0 else {}


def main() -> int:
    start = time.monotonic()
    results = [
        check_platform(platform.system(), platform.machine()),
        check_python(sys.version_info[:2], sys.base_prefix),
        check_user(os.geteuid(), getpass.getuser()),
        check_disk(shutil.disk_usage(ROOT).free, ROOT),
        check_kernel(kernelspecs()),
        check_certificates(),
        check_local_port(),
        check_jupyterlab(*jupyterlab_starts(), as_root=os.geteuid() == 0),
        check_private_network(*private_network_status(), in_container="KIT_CONTAINER" in os.environ,
                              addresses=network_addresses()),
    ]
    for result in results:
        print(f"preflight: {result.status:4s} {result.what}: {result.message}", flush=True)
    if not any(r.status == "FIX" for r in results):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        round_start = time.monotonic()
        try:
            history = run_one_round()
            result = check_training(history, time.monotonic() - round_start)
        except Exception as e:  # whatever fails, the learner needs to read it
            result = Result("FIX", "training", f"one FedAvg round failed: {type(e).__name__}: {e}")
        print(f"preflight: {result.status:4s} {result.what}: {result.message}")
        results.append(result)
    problems = sum(r.status == "FIX" for r in results)
    elapsed = time.monotonic() - start
    if problems:
        print(f"preflight: NOT READY, {problems} to fix (above), after {elapsed:.0f} s")
        return 1
    print(f"preflight: ready ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
