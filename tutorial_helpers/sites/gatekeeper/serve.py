"""The gatekeeper's process, and its commands: ``python -m tutorial_helpers.gatekeeper serve|approve|pin|limit|trust``.

`serve` is what the kit starts (`Gatekeeper.command`), inside the site's
private network: it starts the worker, waits until it listens, and serves
the `Gate` on the gatekeeper's port until it is stopped or the worker ends;
then it stops the worker, and ends as the worker ended. The process imports
no TensorFlow: the protocol buffers it needs are plain Python modules,
loaded without their packages' heavy `__init__` (`protos_without_tensorflow`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Callable, Mapping
from concurrent import futures
from pathlib import Path

from tutorial_helpers.runtime import launcher
from tutorial_helpers.runtime.workers import GRPC_OPTIONS
from tutorial_helpers.sites.gatekeeper.audit_log import AUDIT_LOG, AuditLog
from tutorial_helpers.sites.gatekeeper.policy import (
    APPROVALS,
    LIMITS,
    Policy,
    approve,
    pin,
    read_approvals,
    set_limits,
    trust_controller,
)

__all__ = ["HANDSHAKE_SECONDS", "main", "protos_without_tensorflow", "serve"]

# A client must finish its TLS handshake within this time, or gRPC closes the connection: strangers that
# open connections and send nothing cannot hold the gatekeeper's (or the site server's) places for long.
HANDSHAKE_SECONDS = 5.0


def protos_without_tensorflow() -> None:
    """Makes TFF's and TensorFlow's protocol buffer modules importable without TensorFlow.

    For the gatekeeper process only (it must start in a fraction of a second
    and in little memory): their packages are registered as empty modules,
    so a later `import tensorflow` in this process would fail.
    """
    packages = {"tensorflow_federated": ("proto", "v0"), "tensorflow": ("core", "framework")}
    for top, (middle, leaf) in packages.items():
        if top in sys.modules:
            continue
        spec = importlib.util.find_spec(top)  # Finds the folder; runs nothing.
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(f"{top} is not installed in {sys.executable}'s environment.")
        folder = spec.submodule_search_locations[0]
        for name, path in ((top, folder), (f"{top}.{middle}", os.path.join(folder, middle)),
                           (f"{top}.{middle}.{leaf}", os.path.join(folder, middle, leaf))):
            module = types.ModuleType(name)
            module.__path__ = [path]
            sys.modules[name] = module


def serve(args) -> int:
    """Runs the gatekeeper (the `serve` command's arguments); returns the exit code."""
    import grpc

    from tutorial_helpers.sites.gatekeeper.proxy import ControllerOnly, Gate, standard_chains

    folder = Path(args.folder)
    try:
        policy = Policy(folder)
        approvals, pins, limits, trusted = policy.current()
        log = AuditLog(folder / AUDIT_LOG)
    except (OSError, ValueError) as e:
        print(f"gatekeeper: site {args.site!r}: {e}", file=sys.stderr, flush=True)
        return 2
    user = None if args.worker_user is None else tuple(int(p) for p in args.worker_user.split(":"))
    stop = launcher.stop_on_signals()  # Before the worker starts: a stop while it starts is heard.
    worker = launcher.start_command(args.command, user)
    server = gate = None
    try:
        launcher.wait_for_port(args.worker_port, worker, timeout=60, stop=stop)
        cap = None if args.max_result_bytes <= 0 else args.max_result_bytes
        chains = standard_chains(policy, cap, tls=args.tls is not None)
        gate = Gate(args.site, log, f"127.0.0.1:{args.worker_port}", *chains)
        interceptors = [] if args.tls is None else [ControllerOnly(args.site, args.controller, log, policy)]
        options = [*GRPC_OPTIONS, ("grpc.server_handshake_timeout_ms", int(HANDSHAKE_SECONDS * 1000))]
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), options=options, interceptors=interceptors)
        server.add_generic_rpc_handlers((gate.handler(),))
        if args.tls is None:
            server.add_insecure_port(f"127.0.0.1:{args.port}")
        else:
            from tutorial_helpers.sites.tls import Identity

            server.add_secure_port(f"127.0.0.1:{args.port}", Identity(args.tls).server_credentials())
        server.start()
        limit = "none" if cap is None else f"{cap:,} bytes"
        tls = "no TLS" if args.tls is None else f"mutual TLS, serving only {args.controller!r}" + (
            f" with the certificate {trusted[:16]}..." if trusted else "")
        pinned = ", ".join(f"{name} = {value}" for name, value in pins.items()) or "none"
        limited = ", ".join(f"{name} = {value}" for name, value in limits.items()) or "none"
        log.write(f"gatekeeper started for site {args.site!r}: {len(approvals)} approved computations, "
                  f"pinned values {pinned}, limits {limited}, result size limit {limit}, {tls}, "
                  f"worker pid {worker.pid}")
        while not stop.is_set() and worker.poll() is None:
            stop.wait(0.1)
    except TimeoutError as e:
        message = f"gatekeeper for site {args.site!r}: {e}"
        log.write(message)
        print(message, file=sys.stderr, flush=True)  # Into the kit's log of the process, for its error.
    except launcher.CommandEnded:
        pass
    finally:
        if server is not None:
            server.stop(grace=0)
        if gate is not None:
            gate.close()
        # Within 2 s: the launcher above gives this process 4 s and the kit the launcher 5 s (all were told at
        # once), so the line below is written before anyone kills this process.
        launcher.stop_command(worker, timeout=2)
        code = worker.returncode
        log.write(f"gatekeeper stopped for site {args.site!r}: worker "
                  + ("stopped by the kit" if stop.is_set() else f"ended with code {code}"))
        log.close()
    if stop.is_set():
        return 0
    return launcher.exit_code_like(code) or 1


def _load(target: str) -> Callable[[], Mapping[str, object]]:
    module, _, function = target.partition(":")
    if not module or not function:
        raise SystemExit(f"approve: {target!r} is not MODULE:FUNCTION (for instance "
                         "tutorial_helpers.sites:fed_avg_computations).")
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tutorial_helpers.gatekeeper",
                                     description="A site's gatekeeper: what runs on its data.")
    commands = parser.add_subparsers(dest="what", required=True)
    serving = commands.add_parser("serve", help="run a site's gatekeeper in front of its worker (the kit starts it)")
    serving.add_argument("--site", required=True, help="the site's name, for errors and the log")
    serving.add_argument("--folder", required=True, help=f"the gatekeeper's folder: {APPROVALS}, {AUDIT_LOG}")
    serving.add_argument("--port", type=int, required=True, help="port to listen on, on 127.0.0.1")
    serving.add_argument("--worker-port", type=int, required=True, help="the worker's port, on 127.0.0.1")
    serving.add_argument("--max-result-bytes", type=int, default=0, help="largest answer sent back (0: no limit)")
    serving.add_argument("--worker-user", help="UID:GID to run the worker as (root only)")
    serving.add_argument("--tls", help="the site's folder from `python -m tutorial_helpers.tls make`: mutual TLS")
    serving.add_argument("--controller", default="controller", help="with --tls: the name the client's "
                         "certificate must carry (default: controller)")
    serving.add_argument("command", nargs="+", help="the worker's command, after --")
    agree = commands.add_parser("approve", help="add the computations a function builds to a site's approval list")
    agree.add_argument("folder", help="the site's gatekeeper folder")
    agree.add_argument("target", help="MODULE:FUNCTION returning {description: tff.Computation}")
    pinning = commands.add_parser("pin", help="pin values (a learning rate) in a site's pins.txt")
    pinning.add_argument("folder", help="the site's gatekeeper folder")
    pinning.add_argument("values", nargs="+", metavar="NAME=NUMBER", help="client_work.learning_rate=0.02")
    limiting = commands.add_parser("limit", help="set a site's limits on what leaves it (limits.txt)")
    limiting.add_argument("folder", help="the site's gatekeeper folder")
    limiting.add_argument("values", nargs="+", metavar="NAME=NUMBER",
                          help="; ".join(f"{name}: {what}" for name, what in LIMITS.items()))
    trusting = commands.add_parser("trust", help="serve only this controller certificate (trusted_controller.txt)")
    trusting.add_argument("folder", help="the site's gatekeeper folder")
    trusting.add_argument("certificate", help="the controller's certificate, cert.pem of its TLS folder")
    args = parser.parse_args(argv)
    if args.what == "trust":
        try:
            value = trust_controller(args.folder, args.certificate)
        except (OSError, ValueError) as e:
            parser.error(f"{args.certificate}: {e}")
        print(f"site serves only the controller certificate with SHA-256 {value}")
        return 0
    if args.what in ("limit", "pin"):
        limiting = args.what == "limit"
        example = "min_clients=5" if limiting else "client_work.learning_rate=0.02"
        given = {}
        for value in args.values:
            name, sep, number = value.partition("=")
            try:
                given[name.strip()] = float(number)
            except ValueError:
                sep = ""
            if not sep:
                parser.error(f"{value!r} is not NAME=NUMBER (for instance {example})")
        try:
            now = (set_limits if limiting else pin)(args.folder, given)
        except (OSError, ValueError) as e:
            parser.error(str(e))
        for name, number in now.items():
            print(f"{'limit' if limiting else 'pinned'} {name} = {number}")
        return 0
    if args.what == "serve":
        protos_without_tensorflow()
        return serve(args)
    added = approve(args.folder, _load(args.target)())
    for value, description in added.items():
        print(f"approved {value} {description}")
    print(f"{len(added)} added; {len(read_approvals(args.folder))} on {Path(args.folder) / APPROVALS}")
    return 0
