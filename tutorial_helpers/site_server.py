"""One site on a machine of its own: its worker, its gatekeeper and one port, mutual TLS only.

What a site runs so that a controller on another machine can train on its
data without the data leaving::

    python -m tutorial_helpers.site_server --site clinic --root /data/clinic \\
        --gatekeeper /srv/clinic-gatekeeper --tls /etc/tff-kit/clinic --listen 10.0.0.2:7000

* ``--root``: the site's data root, as `tutorial_helpers.sites.write_site`
  made it (``catalogue.json`` and ``clients/``); the worker runs there.
* ``--gatekeeper``: the site's gatekeeper folder: ``approved.txt`` (made with
  ``python -m tutorial_helpers.gatekeeper approve``) and ``audit.log``.
* ``--tls``: the site's folder from ``python -m tutorial_helpers.tls make``.
* ``--listen``: the address and port the controller connects to; the only
  port the site opens.
* ``--user`` (when started as root): the account the worker runs as, owner of
  the data root; the gatekeeper stays root's, so the worker cannot change the
  approval list or the log.

The worker runs in a private network namespace, where only its gatekeeper
reaches it (`tutorial_helpers.worker_process`), and the gatekeeper speaks
only mutual TLS and serves only the controller's certificate
(`tutorial_helpers.tls`). This program relays the TCP connections on
``--listen`` to the gatekeeper, byte for byte: TLS runs end to end between
the controller and the gatekeeper. It refuses to start where the worker
cannot be put in a private network, since the worker's own port would then
be open beside the gatekeeper's. It stops the gatekeeper and the worker when
it is stopped (SIGTERM, SIGINT, Ctrl-C) or dies.

It imports no TensorFlow: a site machine needs the kit's environment only for
``worker_binary`` (inside the tensorflow-federated wheel) and gRPC.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import signal
import sys
from pathlib import Path

from tutorial_helpers.gatekeeper import Gatekeeper
from tutorial_helpers.runtime import launcher
from tutorial_helpers.runtime.processes import ManagedProcess, private_network_status

_WORKER_PORT = 8000  # Inside the site's private network: any port will do.
_GATEKEEPER_PORT = 8001
# The controller opens one connection or a few; more at once are refused, so strangers cannot pile them up.
MAX_CONNECTIONS = 16
# A TLS client speaks first, at once: a connection silent this long is closed, so it holds no place.
FIRST_BYTES_SECONDS = 10.0


def worker_binary() -> str:
    """The path of TFF's `worker_binary`, found without importing TensorFlow Federated."""
    spec = importlib.util.find_spec("tensorflow_federated")
    path = None if spec is None or not spec.submodule_search_locations else os.path.join(
        spec.submodule_search_locations[0], "data", "worker_binary")
    if path is None or not os.path.isfile(path):
        raise SystemExit("site_server: TFF's worker_binary was not found (it ships inside the tensorflow-federated "
                         "wheel, Linux x86-64 only). Install the kit's environment (README.md) on this machine.")
    return path


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (for instance 10.0.0.2:7000)")
    return host.strip("[]"), int(port)


def _user(name: str) -> tuple[int, int]:
    import pwd

    if os.geteuid() != 0:
        raise SystemExit(f"site_server: --user {name}: only root can run the worker as another user.")
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        raise SystemExit(f"site_server: --user {name}: no such user on this machine (useradd --system {name}).") \
            from None
    if account.pw_uid == 0:
        raise SystemExit(f"site_server: --user {name} is root: the worker must run as a user of its own.")
    return account.pw_uid, account.pw_gid


async def _relay(listen: tuple[str, int], socket_path: str, site: ManagedProcess, ready: str) -> None:
    open_connections = 0

    async def handle(reader, writer):
        nonlocal open_connections
        if open_connections >= MAX_CONNECTIONS:
            writer.close()
            return
        open_connections += 1
        try:
            try:
                first = await asyncio.wait_for(reader.read(1 << 18), FIRST_BYTES_SECONDS)
                inner_reader, inner_writer = await asyncio.open_unix_connection(socket_path)
            except (OSError, TimeoutError):
                writer.close()
                return
            inner_writer.write(first)
            await asyncio.gather(launcher._pipe(reader, inner_writer), launcher._pipe(inner_reader, writer))
        finally:
            open_connections -= 1

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        server = await asyncio.start_server(handle, host=listen[0], port=listen[1])
    except OSError as e:
        raise SystemExit(f"site_server: cannot listen on {listen[0]}:{listen[1]}: {e}") from None
    print(ready, flush=True)
    while not stop.is_set() and site.is_running():
        try:
            await asyncio.wait_for(stop.wait(), timeout=0.2)
        except TimeoutError:
            pass
    server.close()


def arguments() -> argparse.ArgumentParser:
    """The command's arguments (the Dockerfile's site target gives some of them)."""
    parser = argparse.ArgumentParser(prog="python -m tutorial_helpers.site_server", description=__doc__.split("\n")[0])
    parser.add_argument("--site", required=True, help="the site's name, as in its certificate: clinic")
    parser.add_argument("--root", required=True, type=Path, help="the site's data root (catalogue.json, clients/)")
    parser.add_argument("--gatekeeper", required=True, type=Path, help="the gatekeeper's folder (approved.txt)")
    parser.add_argument("--tls", required=True, type=Path, help="the site's folder from tutorial_helpers.tls make")
    parser.add_argument("--listen", required=True, type=_address, help="HOST:PORT the controller connects to")
    parser.add_argument("--user", help="run the worker as this user (root only)")
    parser.add_argument("--max-result-bytes", type=int, help="the largest answer the site sends back")
    parser.add_argument("--controller", default="controller", help="the name on the controller's certificate")
    return parser


def check_setup(site: str, gatekeeper: Path, tls: Path, worker_uid: int | None) -> list[str]:
    """What is wrong with a site's gatekeeper folder and certificate folder; [] if nothing.

    The certificate must name `site`, be valid now and match its key; the key
    must be readable by its owner only; the approval list must not be empty.
    With a worker of its own user, that user must not own (so change) the
    gatekeeper's folder or the certificate's, nor its files.
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from tutorial_helpers.gatekeeper import APPROVALS, read_approvals

    problems = []
    cert = x509.load_pem_x509_certificate((tls / "cert.pem").read_bytes())
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if site not in names:
        problems.append(f"{tls / 'cert.pem'} is a certificate for {names}, not for site {site!r}: give the folder "
                        f"`tls make` made for {site!r}.")
    now = datetime.datetime.now(datetime.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        problems.append(f"{tls / 'cert.pem'} is valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} to "
                        f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, not now: make new certificates.")
    key = serialization.load_pem_private_key((tls / "key.pem").read_bytes(), None)
    if key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
            != cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo):
        problems.append(f"{tls / 'key.pem'} is not the key of {tls / 'cert.pem'}.")
    if (tls / "key.pem").stat().st_mode & 0o077:
        problems.append(f"{tls / 'key.pem'} can be read by others than its owner: chmod 600 it.")
    if not read_approvals(gatekeeper):
        problems.append(f"{gatekeeper / APPROVALS} approves nothing, so the site would refuse every computation: "
                        "approve the training first (python -m tutorial_helpers.gatekeeper approve).")
    for path in (gatekeeper, *gatekeeper.iterdir(), tls, *tls.iterdir()):
        if path.stat().st_mode & 0o002:
            problems.append(f"{path} can be changed by every user of this machine: chmod o-w it.")
        if worker_uid is not None and path.stat().st_uid == worker_uid:
            problems.append(f"{path} belongs to the worker's user, who could then change it (the approvals, "
                            "the log) or read the site's key: give it to root (chown -R root).")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = arguments()
    args = parser.parse_args(argv)
    stopped = False

    def stop(*_):  # Until the relay runs: stop cleanly, the site's processes included (finally below).
        nonlocal stopped
        stopped = True
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    if not (args.root / "catalogue.json").is_file():
        parser.error(f"--root {args.root}: no catalogue.json there; make the site's data with sites.write_site.")
    try:
        keeper = Gatekeeper(args.gatekeeper, args.site, args.max_result_bytes, tls=args.tls,
                            controller=args.controller)
    except (OSError, ValueError) as e:
        parser.error(str(e))
    if os.geteuid() == 0 and args.user is None:
        parser.error("started as root, the worker would run as root, who can change the approval list and read "
                     "the site's key: give --user, an account that owns the data root and nothing else.")
    user = None if args.user is None else _user(args.user)
    problems = check_setup(args.site, args.gatekeeper, args.tls, None if user is None else user[0])
    if problems:
        parser.error("\n  ".join(["the site is not ready:", *problems]))
    possible, reason = private_network_status()
    if not possible:
        print(f"site_server: the worker must run in a private network, where only the gatekeeper reaches it, and "
              f"this system does not allow one: {reason}. Without it the worker's own port would be open beside "
              "the gatekeeper's, so the site does not start. In a container, run the kit's site image as its "
              "docs say (docs/sites_on_other_machines.md).", file=sys.stderr)
        return 2
    command = keeper.command([worker_binary(), f"--port={_WORKER_PORT}", "--max_concurrent_computation_calls=-1"],
                             worker_port=_WORKER_PORT, port=_GATEKEEPER_PORT, worker_user=user)
    site = None
    try:
        site = ManagedProcess(command, description=f"site {args.site!r}", private_network=True,
                              inner_port=_GATEKEEPER_PORT, cwd=args.root, netns_only=user is not None)
        try:
            site._wait(lambda: os.path.exists(site.socket_path), 60, "start")
        except (RuntimeError, TimeoutError) as e:
            print(f"site_server: {e}", file=sys.stderr)
            return 1
        host, port = args.listen
        ready = (f"site {args.site!r} serves on {host}:{port} (mutual TLS, only {args.controller!r}); data root "
                 f"{args.root}, audit log {args.gatekeeper / 'audit.log'}. Stop it with Ctrl-C.")
        asyncio.run(_relay(args.listen, site.socket_path, site, ready))
        if not site.is_running():
            print(f"site_server: {site} ended. Its log ends with:\n{site.log_tail()}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        if not stopped:
            raise
    finally:
        if site is not None:
            site.stop()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM before anything started.
        sys.exit(130)
