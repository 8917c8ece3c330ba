"""What runs between the kit and every process it starts.

`ManagedProcess` (in `tutorial_helpers.runtime.processes`) starts each child as
``python -m tutorial_helpers.runtime.launcher --parent=PID [options] -- COMMAND``.
This small program, using only the standard library:

1. asks Linux to send it SIGTERM when its parent dies, even by SIGKILL
   (``prctl(PR_SET_PDEATHSIG)``), so a killed Jupyter kernel leaves nothing
   running;
2. then either becomes COMMAND (``exec``), or, with ``--socket``, contains it:
   it enters a new user and network namespace, whose only network is its own
   loopback interface, starts COMMAND there, and relays connections from a
   Unix socket on the shared file system (in a directory only the user can
   open) to ``127.0.0.1:PORT`` inside the namespace.
3. with ``--user=UID:GID`` as well (root only), runs COMMAND as that user: in a
   new network namespace (no user namespace, which would map root only), with
   no supplementary groups. ``--netns-only`` (root only) makes the same
   namespace but runs COMMAND as root, for a COMMAND that starts its own
   child as another user (a site's gatekeeper, `tutorial_helpers.sites.gatekeeper`).
   The launcher opens COMMAND's file first and runs it from that open file,
   so the user needs no access to the folders it is in; it does need access
   to its working directory (a site's data root, which that user owns).
4. when its parent died (a kernel killed by SIGKILL), it stops COMMAND and
   removes the parent's temporary folders and logs (`remove_orphans`): a
   site's raw examples do not wait in /tmp for the kit's next process.

TFF's `worker_binary` listens on every interface (``[::]:PORT``) and has no
flag to change that, nor any authentication. Inside its own namespace, "every
interface" is one loopback nobody else shares: the only way in is the Unix
socket, and only the user's own processes can open it. No root is needed:
Linux lets any user create a user namespace, and in it a network namespace,
unless the administrator or a container forbids it; ``--probe`` tells.

The parent starts the launcher in a session of its own (see `processes`),
so Jupyter's interrupt, a SIGINT to the kernel's process group, does not
reach it or COMMAND.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import fcntl
import functools
import os
import signal
import socket
import struct
import subprocess
import sys
import time

_PR_SET_PDEATHSIG = 1
# What a contained command's launcher receives when the kit's process dies (the kit stops it with SIGTERM).
PARENT_DIED = signal.SIGUSR1
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


@functools.cache
def _libc():
    # Cached: find_library runs ldconfig, which must not happen between fork and
    # exec (the worker's preexec_fn calls _die_with); the launcher loads it first.
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _die_with(parent: int, sig: int = signal.SIGTERM) -> None:
    """Asks the kernel for `sig` when the parent dies; exits if it already has."""
    if not sys.platform.startswith("linux"):
        return
    if _libc().prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # It died before we asked.
        sys.exit(1)


def enter_private_network(user_namespace: bool = True) -> None:
    """Moves this (single-threaded) process into a new network namespace.

    With `user_namespace` (what an ordinary user needs), into a new user
    namespace too, where the user keeps its identity (its uid and gid map to
    themselves); without (root only), the process keeps its credentials, so
    that it can start its command as another user. The namespace's loopback
    interface is brought up; there is no other interface. Raises OSError with
    the reason when the system does not allow it.
    """
    uid, gid = os.getuid(), os.getgid()
    flags, names = (_CLONE_NEWUSER | _CLONE_NEWNET, "CLONE_NEWUSER | CLONE_NEWNET") if user_namespace else (
        _CLONE_NEWNET, "CLONE_NEWNET")
    if _libc().unshare(flags) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"unshare({names}): {os.strerror(errno)}")
    if user_namespace:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(s, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sh14x", b"lo", flags | _IFF_UP))


# Every folder and log file the kit makes in the temporary folder is named
# tff-kit-<pid of the process that made it>-..., so that once that process is
# gone (a kernel killed by SIGKILL) anyone of the same user can tell it is an
# orphan: `remove_orphans`.
ORPHAN_PREFIX = "tff-kit-"


def remove_orphans() -> list[str]:
    """Removes this user's kit folders and log files whose owner process is gone; returns their paths.

    Folders and files of running processes, of other users, and without a
    pid are left alone. Called by the kit whenever it makes such a folder,
    when `tutorial_helpers.runtime.processes` is imported, and by a launcher
    whose parent died: so a killed kernel's sites folder, with every site's
    raw examples, goes as soon as the kernel's workers are stopped (or, at
    the latest, at the next kit process's start).
    """
    import glob
    import shutil
    import tempfile

    removed = []
    for path in glob.glob(os.path.join(tempfile.gettempdir(), ORPHAN_PREFIX + "*-*")):
        owner = os.path.basename(path)[len(ORPHAN_PREFIX):].split("-", 1)[0]
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if not owner.isdigit() or info.st_uid != os.getuid() or int(owner) == os.getpid():
            continue
        if not process_gone(int(owner)):
            continue
        # Its maker has ended (or is a zombie, which will never clean up): an orphan.
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                continue
        removed.append(path)
    return removed


def process_gone(pid: int) -> bool:
    """Whether process `pid` has ended: no such process, or a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except FileNotFoundError:
        return True
    except OSError:  # No /proc: the signal 0 check, which counts a zombie as alive.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # Alive, another user's.
            pass
        return False


class CommandEnded(Exception):
    """The command exited (or was told to stop) before it listened."""


def listens(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def wait_for_port(port: int, child: subprocess.Popen, timeout: float, stop=None) -> None:
    """Returns once `child` listens on 127.0.0.1:`port`.

    Raises `CommandEnded` if `child` exits first, or `stop` (a
    `threading.Event`) is set; TimeoutError, naming the command, after
    `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while not listens(port):
        if child.poll() is not None or (stop is not None and stop.is_set()):
            raise CommandEnded
        if time.monotonic() > deadline:
            raise TimeoutError(f"{os.path.basename(str(child.args[0]))} did not listen on port {port} in "
                               f"{timeout:.0f} s")
        time.sleep(0.05)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copies what `reader` gives to `writer` until either end closes; then closes `writer`."""
    try:
        while data := await reader.read(1 << 18):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


def stop_on_signals(loop: asyncio.AbstractEventLoop | None = None,
                    signals=(signal.SIGTERM, signal.SIGHUP, signal.SIGINT)):
    """An event set by any of `signals`: an `asyncio.Event` with `loop`, a `threading.Event` without."""
    if loop is not None:
        event = asyncio.Event()
        for sig in signals:
            loop.add_signal_handler(sig, event.set)
        return event
    import threading

    event = threading.Event()
    for sig in signals:
        signal.signal(sig, lambda *_: event.set())
    return event


async def run_until_stopped(stop: asyncio.Event, running, interval: float = 0.2) -> None:
    """Returns when `stop` is set or `running()` turns false (a child that ended)."""
    while not stop.is_set() and running():
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except TimeoutError:
            pass


def exit_code_like(code: int | None) -> int:
    """Ends this process as a child that ended with `code` ended: by the same signal, if a signal ended it.

    So the error of whoever started this process names the signal. Returns
    the exit code to use otherwise (0 for None: stopped by the kit).
    """
    if code is None:
        return 0
    if code < 0:
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # These two have no handler to reset.
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code  # Only if that signal does not end a process.
    return code


async def _relay(socket_path: str, port: int, child: subprocess.Popen, parent_died) -> int | None:
    """Relays each connection on `socket_path` to 127.0.0.1:`port` until `child` exits.

    Returns the child's exit code, or None when the launcher was told to stop
    (SIGTERM, SIGHUP) or its parent died (`PARENT_DIED`, which also sets the
    `parent_died` event).
    """

    async def handle(reader, writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    loop = asyncio.get_running_loop()
    stop = stop_on_signals(loop, (signal.SIGTERM, signal.SIGHUP))
    loop.add_signal_handler(PARENT_DIED, lambda: (parent_died.set(), stop.set()))
    server = await asyncio.start_unix_server(handle, path=socket_path)
    os.chmod(socket_path, 0o600)
    await run_until_stopped(stop, lambda: child.poll() is None)
    server.close()
    return child.poll()


def _become(uid: int, gid: int) -> None:
    """In the child, before exec: drops every group and becomes uid:gid."""
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def start_command(command: list[str], user: tuple[int, int] | None = None) -> subprocess.Popen:
    """Starts `command` as a child that dies with this process, as `user` (UID, GID) if given.

    With `user` (root only), the program is opened here and run from that open
    file (see the module's docstring).
    """
    me = os.getpid()
    _libc()  # Loaded here, not in the child between fork and exec.
    pass_fds = ()
    if user is not None:
        program = os.open(command[0], os.O_RDONLY)
        pass_fds, command = (program,), [f"/proc/self/fd/{program}", *command[1:]]

    def prepare():
        if user is not None:
            _become(*user)
        # Only this process can reach the child's network, so it goes with it. Asked
        # after any change of credentials, which clears it; the check after the
        # request closes the race with a parent that dies between fork and
        # request: the child then never starts COMMAND.
        _die_with(me, signal.SIGKILL)

    try:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, pass_fds=pass_fds, preexec_fn=prepare)
    finally:
        for fd in pass_fds:
            os.close(fd)


def stop_command(child: subprocess.Popen, timeout: float = 4) -> None:
    """Stops `child` if it still runs: SIGTERM, then SIGKILL after `timeout` seconds; waits for it."""
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _run_contained(command: list[str], socket_path: str, port: int, parent: int,
                   user: tuple[int, int] | None = None, user_namespace: bool = True) -> int:
    import threading

    enter_private_network(user_namespace=user_namespace and user is None)
    parent_died = threading.Event()

    def heard_parent_died(*_):
        parent_died.set()

    # Its own handler before the request, so that the signal never ends the launcher unswept (while the
    # command starts, and after the relay's event loop has closed, which puts the default handler back).
    signal.signal(PARENT_DIED, heard_parent_died)
    # Again (a change of credentials may clear the request), with a signal of its own: the launcher
    # then knows that its parent died, rather than that the kit stopped it.
    _die_with(parent, PARENT_DIED)
    child = start_command(command, user)
    try:
        wait_for_port(port, child, timeout=60, stop=parent_died)
        code = asyncio.run(_relay(socket_path, port, child, parent_died))
    except TimeoutError as e:
        print(f"launcher: {e}", file=sys.stderr, flush=True)
        code = 1
    except CommandEnded:
        code = child.returncode
    finally:
        signal.signal(PARENT_DIED, heard_parent_died)  # The event loop, closed, put the default back.
        stop_command(child)
        try:
            os.unlink(socket_path)
        except FileNotFoundError:
            pass
        if parent_died.is_set() or process_gone(parent):  # A killed kernel: its folders go with it.
            _sweep_after(parent)
    return exit_code_like(code)


def _sweep_after(parent: int, timeout: float = 30) -> None:
    """Once process `parent` has ended, removes its folders and logs (`remove_orphans`); says what it did.

    The parent-death signal comes when the parent's *thread* that started
    this launcher ends; the process is gone (a zombie, for `process_gone`)
    once its main thread has exited too, which under load can take seconds.
    A parent still running after `timeout` seconds (a thread that started us
    ended, the process did not) keeps its folders: it removes them itself.
    """
    deadline = time.monotonic() + timeout
    while not process_gone(parent) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not process_gone(parent):
        print(f"launcher: process {parent} still runs {timeout:.0f} s after the thread that started this launcher "
              f"ended; its folders are left to it", file=sys.stderr, flush=True)
        return
    # Said before the sweep, which removes this log: a log left behind shows the sweep ran and missed it.
    print(f"launcher: process {parent} has ended; removing its folders and logs", file=sys.stderr, flush=True)
    remove_orphans()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tutorial_helpers.runtime.launcher",
        description="Run COMMAND so that it dies with PARENT; optionally in a private network.",
    )
    parser.add_argument("--parent", type=int, help="pid whose death stops COMMAND")
    parser.add_argument("--socket", help="Unix socket to relay to the contained COMMAND's port")
    parser.add_argument("--port", type=int, help="port COMMAND listens on inside its namespace")
    parser.add_argument("--user", help="UID:GID to run the contained COMMAND as (root only)")
    parser.add_argument("--netns-only", action="store_true",
                        help="root only: a network namespace without a user namespace, so that the contained "
                             "COMMAND can itself start a program as another user (a site's gatekeeper)")
    parser.add_argument("--probe", action="store_true",
                        help="only check that a private network namespace can be made here")
    parser.add_argument("command", nargs="*", help="the command, after --")
    args = parser.parse_args(argv)
    if args.probe:
        try:
            enter_private_network()
        except OSError as e:
            print(e, flush=True)
            return 1
        return 0
    if not args.command or args.parent is None:
        parser.error("--parent=PID and a command after -- are required")
    if (args.socket is None) != (args.port is None):
        parser.error("--socket and --port go together")
    if args.port is not None and not 0 < args.port < 65536:
        parser.error(f"--port must be within 1..65535, got {args.port}")
    user = None
    if args.user is not None:
        if args.socket is None:
            parser.error("--user needs --socket: only a contained command runs as another user")
        parts = args.user.split(":")
        if len(parts) != 2 or not all(part.isdigit() and int(part) > 0 for part in parts):
            parser.error(f"--user must be UID:GID, two positive numbers, got {args.user!r}")
        user = (int(parts[0]), int(parts[1]))
        if os.geteuid() != 0:
            parser.error("--user needs root: only root can start a process as another user")
    if args.netns_only and (args.socket is None or os.geteuid() != 0):
        parser.error("--netns-only needs --socket and root")
    _die_with(args.parent)
    if args.socket is None:
        os.execvp(args.command[0], args.command)
    return _run_contained(args.command, args.socket, args.port, args.parent, user,
                          user_namespace=not args.netns_only)


if __name__ == "__main__":
    sys.exit(main())
