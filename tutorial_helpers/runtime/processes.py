"""Child processes the kit starts and always stops.

Every process the kit starts (TFF workers, data services) is a
`ManagedProcess`. Its output goes to a log file, shown in errors when it
fails. It is stopped on `stop()`, on leaving a `with` block and at
interpreter exit, and on Linux also when the parent process dies, even by
SIGKILL, so a killed Jupyter kernel leaves nothing behind (the launcher
asks the kernel for that: see `tutorial_helpers.runtime.launcher`). The kernel
sends that signal when the *thread* that started the child ends, so start
processes from a long-lived thread, such as the main one.

Each child runs in a session of its own. Jupyter's "interrupt" sends SIGINT
to the kernel's whole process group; a child outside that group keeps
running, so an interrupted cell does not take the workers down with it.

A child can also be *contained* (`private_network=True`): it then runs in a
network namespace of its own, reachable only through a Unix socket in a
directory only this user can open (see `tutorial_helpers.runtime.launcher`).
`private_network_status()` tells whether this machine allows that.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
import weakref

from tutorial_helpers.runtime import launcher

# What a killed kernel left behind (its sites' folders, its logs) goes when the kit is next imported, at the latest.
launcher.remove_orphans()


def _stop(process: subprocess.Popen, log_file, socket_dir: str | None) -> None:
    """Stops `process` and its group (SIGTERM, then SIGKILL after 5 s); cleans up."""
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()
    log_file.close()
    if socket_dir is not None:
        shutil.rmtree(socket_dir, ignore_errors=True)


def temporary_folder(purpose: str) -> tempfile.TemporaryDirectory:
    """A temporary folder (mode 0700) that is removed even if this process is killed.

    Like `tempfile.TemporaryDirectory`, it is removed by `cleanup()`, by its
    `with` block or at interpreter exit. Its name, `tff-kit-<pid>-<purpose>-...`,
    carries this process's pid, so if the process is killed by SIGKILL (a
    Jupyter kernel killed or restarted), it is removed as soon as its workers'
    launchers are stopped, or else by the kit's next process
    (`launcher.remove_orphans`).
    """
    if not re.fullmatch(r"[a-z]+", purpose):
        raise ValueError(f"purpose={purpose!r}: use lower-case letters only, such as 'sites'.")
    launcher.remove_orphans()
    return tempfile.TemporaryDirectory(prefix=f"{launcher.ORPHAN_PREFIX}{os.getpid()}-{purpose}-")


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # The launcher leads its own process group.
    except (ProcessLookupError, PermissionError):
        pass


@functools.cache
def private_network_status() -> tuple[bool, str]:
    """Whether this machine lets the kit put a process in a private network.

    Returns (True, "") or (False, the reason). Checked once per process, by
    trying it in a short-lived child.
    """
    if not sys.platform.startswith("linux"):
        return False, f"network namespaces are a Linux feature; this is {sys.platform}"
    probe = subprocess.run(
        [sys.executable, "-m", launcher.__name__, "--probe"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    if probe.returncode == 0:
        return True, ""
    reason = (probe.stdout + probe.stderr).strip().splitlines()
    return False, reason[-1] if reason else f"the probe exited with code {probe.returncode}"


def network_addresses() -> list[str]:
    """This machine's addresses other than loopback ones, IPv4 and IPv6 (Linux; [] elsewhere).

    A worker that listens on every interface is reachable at each of them;
    IPv6 link-local addresses count, since the local network reaches them.
    """
    import fcntl
    import socket
    import struct

    addresses = []
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                fields = line.split()
                if fields[-1] != "lo":
                    addresses.append(str(ipaddress.IPv6Address(int(fields[0], 16))) + "%" + fields[-1])
    except OSError:
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            if name == "lo":
                continue
            try:  # SIOCGIFADDR: the interface's IPv4 address.
                packed = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
            except OSError:  # No IPv4 address.
                continue
            addresses.append(f"{socket.inet_ntoa(packed[20:24])}%{name}")
    return addresses


def uncontained_policy(reason: str, *, in_container: bool, addresses: list[str]) -> tuple[bool, str]:
    """Whether a worker may run uncontained where no private network can be made, and why.

    Returns (True, a warning) inside the kit's container, whose worker ports
    are not published, or on a machine with no address but loopback; else
    (False, an error that says why and the three ways out).
    """
    if in_container:
        return True, (
            "TFF workers will listen on every network interface of this container, as TFF's own "
            f"do: the container does not allow a private network namespace ({reason}). The kit's "
            "container publishes only Jupyter's port, on your machine's loopback, so nothing "
            "else reaches them.")
    if not addresses:
        return True, (
            "TFF workers will listen on every network interface, as TFF's own do: this system "
            f"does not allow a private network namespace ({reason}); this machine has no address "
            "but loopback now, so nothing else reaches them.")
    python = os.path.realpath(sys.executable)
    return False, (
        "The kit will not start a TFF worker here: this system does not allow a private network "
        f"namespace ({reason}), and a worker would then listen on every interface, at "
        f"{', '.join(addresses[:3])}{' ...' if len(addresses) > 3 else ''}, with no password. "
        "Anyone on this network could have it run computations, which can read and write your "
        "files. Three ways out:\n"
        "  1. Let the kit make private networks. On Ubuntu 23.10 and later, AppArmor forbids "
        "them to programs without a profile; allow the kit's Python only (it stays allowed "
        "for every program run by that interpreter):\n"
        f"       printf 'abi <abi/4.0>,\\ninclude <tunables/global>\\nprofile tff-kit {python} "
        "flags=(unconfined) {\\n  userns,\\n}\\n' | sudo tee /etc/apparmor.d/tff-kit && "
        "sudo apparmor_parser -r /etc/apparmor.d/tff-kit\n"
        "     or lift the restriction for every program until the next boot (it undoes a "
        "protection Ubuntu added): sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0\n"
        "  2. Run the kit in its container (README.md, 'Containers'), which publishes no worker "
        "port.\n"
        "  3. Accept the risk knowingly, on a network you trust: pass private_network=False "
        "(create_execution_context(..., private_network=False)).")


@functools.cache
def warn_uncontained(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def decide_containment(private_network: bool | None, *, needed_by: str | None = None,
                       way_out: str = "") -> bool:
    """Whether to contain a worker in a private network: the one place the kit decides it.

    `private_network` is what the caller asked: True requires containment
    (RuntimeError where the system forbids it), False refuses it, None
    contains where possible and otherwise runs uncontained only where
    `uncontained_policy` allows (with a warning, once), refusing with a
    RuntimeError that says what to do elsewhere. `needed_by` names what
    cannot work uncontained (a gatekeeper, a worker run as another user):
    then False is a ValueError and an impossible namespace a RuntimeError
    that ends with `way_out`. Starts nothing but the probe.
    """
    if needed_by is not None and private_network is False:
        raise ValueError(f"{needed_by} needs a contained worker: pass private_network=None or True.")
    if private_network is False:
        return False
    possible, reason = private_network_status()
    if possible:
        return True
    if needed_by is not None:
        raise RuntimeError(f"{needed_by} needs a private network for the worker, which this system does not "
                           f"allow: {reason}. {way_out}".rstrip())
    if private_network:
        raise RuntimeError(f"private_network=True, but this system does not allow a private network namespace: "
                           f"{reason}. Pass private_network=None to run the worker uncontained.")
    allowed, message = uncontained_policy(reason, in_container="KIT_CONTAINER" in os.environ,
                                          addresses=network_addresses())
    if not allowed:
        raise RuntimeError(message)
    warn_uncontained(message)
    return False


@functools.cache
def _warn_no_parent_death_signal() -> None:
    warnings.warn(
        f"On {sys.platform}, the kit cannot have the system stop its processes when this one "
        "is killed: a killed kernel may leave TFF workers running. They are still stopped on "
        "close() and at a normal exit.",
        RuntimeWarning,
        stacklevel=3,
    )


class ManagedProcess:
    """Starts `args` as a child process that the kit always stops.

    Args:
      args: the command line.
      description: how errors name it, e.g. "TFF worker".
      private_network: contain the child in a network namespace of its own;
        it must then listen on `inner_port`, and is reached through the Unix
        socket `socket_path`. Needs `private_network_status()[0]`.
      inner_port: the port the contained child listens on.
      cwd: the child's working directory (a site's data root: relative paths
        in what it runs resolve there); by default this process's.
      user: (uid, gid) to run a contained child as (root only; see the
        launcher); by default this process's user.
      netns_only: root only, for a contained child that starts its own child
        as another user (a site's gatekeeper): its namespace is a network
        namespace only, and it runs as root.
    """

    socket_path: str | None = None

    def __init__(self, args: list[str], description: str, *, private_network: bool = False,
                 inner_port: int | None = None, cwd: str | os.PathLike | None = None,
                 user: tuple[int, int] | None = None, netns_only: bool = False):
        if (user is not None or netns_only) and not private_network:
            raise ValueError("Only a child in a private network can run as another user (user=...).")
        self.description = description
        if not sys.platform.startswith("linux"):
            _warn_no_parent_death_signal()
        # -P: the child's working directory (a site's data root) is not put on its import path.
        command = [sys.executable, "-P", "-m", launcher.__name__, f"--parent={os.getpid()}"]
        socket_dir = None
        if private_network:
            launcher.remove_orphans()
            # Mode 0700: only this user. The pid lets a later process tell an orphan.
            socket_dir = tempfile.mkdtemp(prefix=f"{launcher.ORPHAN_PREFIX}{os.getpid()}-")
            self.socket_path = os.path.join(socket_dir, "socket")
            command += [f"--socket={self.socket_path}", f"--port={inner_port}"]
            if user is not None:
                command.append(f"--user={user[0]}:{user[1]}")
            if netns_only:
                command.append("--netns-only")
        # Named by this process's pid, as the folders are, so that a killed kernel's logs are swept too.
        name = re.sub(r"[^A-Za-z0-9_]+", "_", description).strip("_") or "process"
        self._log = tempfile.NamedTemporaryFile(  # closed by _stop
            mode="w+b", prefix=f"{launcher.ORPHAN_PREFIX}{os.getpid()}-log-{name}-", suffix=".log"
        )
        try:
            self._process = subprocess.Popen(
                [*command, "--", *args], stdin=subprocess.DEVNULL, stdout=self._log,
                stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd,
            )
        except BaseException:  # Nothing started: leave no log file or socket folder behind.
            self._log.close()
            if socket_dir is not None:
                shutil.rmtree(socket_dir, ignore_errors=True)
            raise
        self._finalizer = weakref.finalize(self, _stop, self._process, self._log, socket_dir)

    @property
    def pid(self) -> int:
        return self._process.pid

    def is_running(self) -> bool:
        return self._process.poll() is None

    def _log_text(self) -> str:
        if self._log.closed:
            return ""
        self._log.flush()
        with open(self._log.name, "rb") as f:
            return f.read().decode("utf-8", errors="replace")

    def log_tail(self, lines: int = 15) -> str:
        """Returns the last `lines` lines the process wrote."""
        if self._log.closed:
            return "(log closed)"
        return "\n".join(self._log_text().splitlines()[-lines:]) or "(empty)"

    def check_alive(self) -> None:
        """Raises RuntimeError, with the process's last log lines, if it has exited."""
        code = self._process.poll()
        if code is not None:
            how = (f"was killed by {signal.Signals(-code).name}" if code < 0
                   else f"exited with code {code}")
            raise RuntimeError(f"{self} is not running: it {how}. Its log ends with:\n{self.log_tail()}")

    def wait_until(self, ready, timeout: float, what: str, interval: float = 0.1):
        """Calls `ready()` every `interval` s until it returns something true, and returns that.

        Raises RuntimeError (with the log's last lines) if the process exits
        first, TimeoutError naming `what` it did not do if `timeout` seconds pass.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            result = ready()
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self} did not {what} within {timeout:.0f} s. Its log ends with:\n{self.log_tail()}"
                )
            time.sleep(interval)

    def wait_for_http(self, url: str, timeout: float) -> None:
        """Waits until `url` answers HTTP 200 (errors as `wait_for_log`'s)."""

        def answers() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    return response.status == 200
            except (urllib.error.URLError, OSError):
                return False

        self.wait_until(answers, timeout, "answer")

    def wait_for_log(self, pattern: str, timeout: float) -> re.Match:
        """Waits until the process has written a line matching `pattern`; returns the match.

        Raises RuntimeError (with the log's last lines) if the process exits
        first, TimeoutError if `timeout` seconds pass.
        """
        compiled = re.compile(pattern, re.MULTILINE)
        return self.wait_until(lambda: compiled.search(self._log_text()), timeout, f"print {pattern!r}")

    def stop(self) -> None:
        """Stops the process and waits for it to exit. Safe to call twice."""
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __str__(self) -> str:
        return f"{self.description} (pid {self.pid})"
