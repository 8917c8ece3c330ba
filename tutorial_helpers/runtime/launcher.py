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
   child as another user (a site's gatekeeper, `tutorial_helpers.gatekeeper`). The launcher opens COMMAND's file first and runs
   it from that open file, so the user needs no access to the folders it is
   in; it does need access to its working directory (a site's data root,
   which that user owns).

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


class _CommandEnded(Exception):
    """The contained command exited before it listened."""


def _wait_for_port(port: int, child: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if child.poll() is not None:
            raise _CommandEnded
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                print(f"launcher: {child.args[0]} did not listen on port {port} in {timeout:.0f} s",
                      file=sys.stderr, flush=True)
                sys.exit(1)
            time.sleep(0.05)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 18):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def _relay(socket_path: str, port: int, child: subprocess.Popen) -> int | None:
    """Relays each connection on `socket_path` to 127.0.0.1:`port` until `child` exits.

    Returns the child's exit code, or None when the launcher was told to stop.
    """

    async def handle(reader, writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    server = await asyncio.start_unix_server(handle, path=socket_path)
    os.chmod(socket_path, 0o600)
    while not stop.is_set() and child.poll() is None:
        try:
            await asyncio.wait_for(stop.wait(), timeout=0.2)
        except TimeoutError:
            pass
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
    enter_private_network(user_namespace=user_namespace and user is None)
    _die_with(parent)  # Again: a change of credentials may clear the request.
    child = start_command(command, user)
    try:
        _wait_for_port(port, child, timeout=60)
        code = asyncio.run(_relay(socket_path, port, child))
    except _CommandEnded:
        code = child.returncode
    finally:
        stop_command(child)
        try:
            os.unlink(socket_path)
        except FileNotFoundError:
            pass
    if code is None:  # Stopped by the kit.
        return 0
    if code < 0:  # End as the command ended, so the kit's error names the signal.
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # These two have no handler to reset.
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code  # Only if that signal does not end a process.
    return code


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
