"""One site on a machine of its own: its worker, its gatekeeper and one port, mutual TLS only.

What a site runs so that a controller on another machine can train on its
data without its raw records leaving (what does leave, each round's partial
aggregate, is computed from them)::

    python -m tutorial_helpers.site_server --site clinic --workspace /srv/clinic --listen 10.0.0.2:7000

* ``--workspace``: the site's workspace (`tutorial_helpers.sites.workspace`):
  ``startup/`` (its folder from ``python -m tutorial_helpers.tls make``),
  ``local/`` (``approved.txt``, made with ``python -m tutorial_helpers.gatekeeper
  approve``, ``pins.txt`` and ``audit.log``) and ``data/`` (its data root, as
  `tutorial_helpers.sites.write_site` made it; the worker runs there). Or
  the three parts wherever they are: ``--tls``, ``--gatekeeper``, ``--root``.
* ``--listen``: the address and port the controller connects to; the only
  port the site opens.
* ``--user`` (when started as root): the account the worker runs as, owner of
  the data root; the gatekeeper stays root's, so the worker cannot change the
  approval list or the log.

The worker runs in a private network namespace, where only its gatekeeper
reaches it (`tutorial_helpers.sites.worker`), and the gatekeeper speaks
only mutual TLS and serves only the controller's certificate
(`tutorial_helpers.sites.tls`). This program relays the TCP connections on
``--listen`` to the gatekeeper, byte for byte: TLS runs end to end between
the controller and the gatekeeper. It refuses to start where the worker
cannot be put in a private network, since the worker's own port would then
be open beside the gatekeeper's. It stops the gatekeeper and the worker when
it is stopped (SIGTERM, SIGINT, Ctrl-C) or dies.

A stranger who reaches the port cannot lock the controller out by opening
connections and sending nothing: each connection has `HANDSHAKE_SECONDS` to
finish its TLS handshake (the gatekeeper's gRPC server closes it after that),
each source address may have at most `MAX_PENDING_PER_SOURCE` connections
that have not yet, and a connection counts against the site's
`MAX_CONNECTIONS` only once it has outlived the handshake, that is, once the
gatekeeper accepted its certificate.

It imports no TensorFlow: a site machine needs the kit's environment only for
``worker_binary`` (inside the tensorflow-federated wheel) and gRPC.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from tutorial_helpers.runtime import launcher
from tutorial_helpers.runtime.accounts import resolve_user
from tutorial_helpers.runtime.processes import ManagedProcess, private_network_status
from tutorial_helpers.runtime.workers import CONTAINED_PORT, worker_binary_path
from tutorial_helpers.sites.gatekeeper import AUDIT_LOG, GATEKEEPER_PORT, Gatekeeper
from tutorial_helpers.sites.gatekeeper.serve import HANDSHAKE_SECONDS
from tutorial_helpers.sites.workspace import SiteWorkspace

# Connections that have finished their TLS handshake (outlived HANDSHAKE_SECONDS): the controller opens
# one or a few; more are closed, so that nobody with a certificate can pile them up either.
MAX_CONNECTIONS = 16
# Connections from one address that have not finished it yet: a stranger fills only its own places.
MAX_PENDING_PER_SOURCE = 4
# Connections from all addresses that have not finished it yet (each lives at most HANDSHAKE_SECONDS).
MAX_PENDING = 256


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (for instance 10.0.0.2:7000)")
    return host.strip("[]"), int(port)


class _Places:
    """Who holds a place at the site's door: connections still in their handshake, by source, and established ones."""

    def __init__(self, limits: argparse.Namespace):
        self.limits = limits
        self.pending: dict[str, int] = {}
        self.established = 0

    def admit(self, source: str) -> bool:
        if (self.pending.get(source, 0) >= self.limits.max_pending_per_source
                or sum(self.pending.values()) >= self.limits.max_pending):
            return False
        self.pending[source] = self.pending.get(source, 0) + 1
        return True

    def leave_pending(self, source: str) -> None:
        self.pending[source] -= 1
        if not self.pending[source]:
            del self.pending[source]

    def establish(self) -> bool:
        if self.established >= self.limits.max_connections:
            return False
        self.established += 1
        return True


async def _relay(listen: tuple[str, int], socket_path: str, site: ManagedProcess, ready: str,
                 limits: argparse.Namespace) -> None:
    places = _Places(limits)

    async def handle(reader, writer):
        source = (writer.get_extra_info("peername") or ("?",))[0]
        if not places.admit(source):
            writer.close()
            return
        pending, established = True, False
        try:
            try:
                inner_reader, inner_writer = await asyncio.open_unix_connection(socket_path)
            except OSError:
                writer.close()
                return
            piping = asyncio.ensure_future(asyncio.gather(launcher.pipe(reader, inner_writer),
                                                          launcher.pipe(inner_reader, writer)))
            # The gatekeeper closes a connection whose handshake has not finished by HANDSHAKE_SECONDS; one
            # still open a little after that has a certificate from the site's authority. Only then does it
            # take one of the site's places.
            done, _ = await asyncio.wait([piping], timeout=HANDSHAKE_SECONDS + 1)
            places.leave_pending(source)
            pending = False
            if done:
                return
            established = places.establish()
            if not established:
                writer.close()
                inner_writer.close()
            await piping
        finally:
            if pending:
                places.leave_pending(source)
            if established:
                places.established -= 1

    stop = launcher.stop_on_signals(asyncio.get_running_loop())
    try:
        server = await asyncio.start_server(handle, host=listen[0], port=listen[1])
    except OSError as e:
        raise SystemExit(f"site_server: cannot listen on {listen[0]}:{listen[1]}: {e}") from None
    print(ready, flush=True)
    await launcher.run_until_stopped(stop, site.is_running)
    server.close()


def arguments() -> argparse.ArgumentParser:
    """The command's arguments (the Dockerfile's site target gives some of them)."""
    parser = argparse.ArgumentParser(prog="python -m tutorial_helpers.site_server", description=__doc__.split("\n")[0])
    parser.add_argument("--site", required=True, help="the site's name, as in its certificate: clinic")
    parser.add_argument("--workspace", type=Path, help="the site's workspace: startup/ (TLS), local/ (policy, "
                        "audit log), data/ (its root); or give the three parts with the next three options")
    parser.add_argument("--root", type=Path, help="the site's data root (catalogue.json, clients/)")
    parser.add_argument("--gatekeeper", type=Path, help="the gatekeeper's folder (approved.txt)")
    parser.add_argument("--tls", type=Path, help="the site's folder from tutorial_helpers.tls make")
    parser.add_argument("--listen", required=True, type=_address, help="HOST:PORT the controller connects to")
    parser.add_argument("--user", help="run the worker as this user (root only)")
    parser.add_argument("--max-result-bytes", type=int, help="the largest answer the site sends back")
    parser.add_argument("--controller", default="controller", help="the name on the controller's certificate")
    parser.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS,
                        help=f"connections past their TLS handshake at once (default {MAX_CONNECTIONS})")
    parser.add_argument("--max-pending-per-source", type=int, default=MAX_PENDING_PER_SOURCE,
                        help="connections from one address still in their handshake "
                             f"(default {MAX_PENDING_PER_SOURCE})")
    parser.add_argument("--max-pending", type=int, default=MAX_PENDING,
                        help=f"connections from all addresses still in their handshake (default {MAX_PENDING})")
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

    from tutorial_helpers.sites.gatekeeper import APPROVALS, read_approvals

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
    for limit in ("max_connections", "max_pending_per_source", "max_pending"):
        if getattr(args, limit) < 1:
            parser.error(f"--{limit.replace('_', '-')} must be at least 1, got {getattr(args, limit)}")
    parts = ("root", "gatekeeper", "tls")
    if args.workspace is not None:
        if any(getattr(args, part) is not None for part in parts):
            parser.error("give either --workspace or --root, --gatekeeper and --tls, not both")
        workspace = SiteWorkspace(args.workspace)
        if workspace.missing():
            parser.error("\n  ".join([f"the workspace {args.workspace} is not ready:", *workspace.missing()]))
        args.root, args.gatekeeper, args.tls = workspace.data, workspace.local, workspace.startup
    elif any(getattr(args, part) is None for part in parts):
        parser.error("give --workspace DIR (startup/, local/, data/), or all of --root, --gatekeeper and --tls")
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
    try:
        user = None if args.user is None else resolve_user(args.user)
    except (PermissionError, LookupError, ValueError) as e:
        parser.error(f"--user {args.user}: {e}")
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
    try:
        binary = worker_binary_path()
    except RuntimeError as e:
        print(f"site_server: {e}", file=sys.stderr)
        return 2
    command = keeper.command([binary, f"--port={CONTAINED_PORT}", "--max_concurrent_computation_calls=-1"],
                             worker_port=CONTAINED_PORT, port=GATEKEEPER_PORT, worker_user=user)
    site = None
    try:
        site = ManagedProcess(command, description=f"site {args.site!r}", private_network=True,
                              inner_port=GATEKEEPER_PORT, cwd=args.root, netns_only=user is not None)
        try:
            site.wait_until(lambda: os.path.exists(site.socket_path), 60, "start")
        except (RuntimeError, TimeoutError) as e:
            print(f"site_server: {e}", file=sys.stderr)
            return 1
        host, port = args.listen
        ready = (f"site {args.site!r} serves on {host}:{port} (mutual TLS, only {args.controller!r}); data root "
                 f"{args.root}, audit log {args.gatekeeper / AUDIT_LOG}. Stop it with Ctrl-C.")
        asyncio.run(_relay(args.listen, site.socket_path, site, ready, args))
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


def run() -> None:
    """The command: `main`, ending with 130 on Ctrl-C or SIGTERM before anything started."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    run()
