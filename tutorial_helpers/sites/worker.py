"""A site's worker: `SiteWorker` behind its gatekeeper on this machine, `RemoteSite` on another.

The worker and its gatekeeper (`tutorial_helpers.sites.gatekeeper`) run in a
network namespace of their own: the worker listens on port 8000 there, the
gatekeeper on 8001, and the controller reaches the gatekeeper only, through
the launcher's Unix socket (`runtime.launcher`). With a user of the site's
own (root only), the gatekeeper runs as this process's user and the worker
as the site's user, so the worker cannot change the gatekeeper's files. With
mutual TLS (`Gatekeeper(tls=...)`), the controller connects with the
certificate in `tls` and accepts only the site's.
"""

from __future__ import annotations

import os
import time

import grpc

from tutorial_helpers.runtime.workers import GRPC_OPTIONS
from tutorial_helpers.sites.gatekeeper import GATEKEEPER_PORT, Gatekeeper
from tutorial_helpers.worker_process import RemoteWorker, WorkerProcess, ping_channel

__all__ = ["RemoteSite", "SiteWorker"]


class SiteWorker(WorkerProcess):
    """A site's worker with its `gatekeeper` in front: the site runs only what the gatekeeper lets through.

    Args:
      gatekeeper: the site's `Gatekeeper` (its folder, its name, its limits,
        its TLS folder if it speaks TLS).
      tls: with a gatekeeper that speaks mutual TLS, the controller's folder
        from `python -m tutorial_helpers.tls make`: its certificate, and the
        authority the site's must come from. Give both or neither.
      The other arguments are `WorkerProcess`'s; the worker must be
      contained (`private_network` None or True), and where the system
      cannot contain it, the site is refused with a RuntimeError: the
      worker's own port would otherwise be open beside the gatekeeper's.
    """

    def __init__(self, gatekeeper: Gatekeeper, *, tls: str | os.PathLike | None = None, **worker_args):
        if (tls is None) != (gatekeeper.tls is None):
            raise ValueError("tls= (the controller's certificate folder) goes with a gatekeeper that speaks TLS "
                             "(Gatekeeper(tls=...)): give both or neither.")
        self.gatekeeper = gatekeeper
        self.tls = tls
        self.description = f"site {gatekeeper.site!r}"
        super().__init__(**worker_args)

    def _check_arguments(self, private_network: bool | None) -> None:
        if private_network is False:
            raise ValueError(f"A gatekeeper (site {self.gatekeeper.site!r}) needs a contained worker: pass "
                             "private_network=None or True.")

    def _containment_needs(self, user: str | None) -> dict:
        return {"needed_by": f"A gatekeeper (site {self.gatekeeper.site!r})",
                "way_out": "Without one, the worker's own port would be open beside the gatekeeper's. Start the "
                           "site without a gatekeeper."}

    def _wrap(self, args: list[str], credentials: tuple[int, int] | None):
        # The launcher runs the gatekeeper (as this user); the gatekeeper starts the worker, as the site's user.
        command = self.gatekeeper.command(args, worker_port=self.port, port=GATEKEEPER_PORT, worker_user=credentials)
        return command, GATEKEEPER_PORT, None, credentials is not None

    def _connect(self, timeout: float) -> grpc.Channel:
        if self.tls is None:
            return super()._connect(timeout)
        from tutorial_helpers.sites.tls import Identity

        deadline = time.monotonic() + timeout
        self.wait_until(lambda: os.path.exists(self.socket_path), timeout, "start", interval=0.02)
        # The gatekeeper listens once the socket is there; one call says whether TLS works.
        channel = Identity(self.tls).secure_channel(self.address, self.gatekeeper.site, GRPC_OPTIONS)
        try:
            ping_channel(channel, max(1.0, deadline - time.monotonic()))
        except grpc.RpcError as e:
            channel.close()
            raise ConnectionError(f"{self} was not reached over TLS: {e.details()}") from None
        return channel


class RemoteSite(RemoteWorker):
    """A site on another machine (``python -m tutorial_helpers.site_server`` there), reached over mutual TLS.

    Args:
      address: host:port where the site listens.
      site: the site's name: with `tls`, only a certificate from the
        workshop's authority that names it is accepted (so another site, or
        anybody else at that address, is not).
      tls: the controller's folder from `python -m tutorial_helpers.tls
        make`. None: plain gRPC (a site the kit's tests start on loopback).
      connect_timeout, call_timeout, audit: as `RemoteWorker`'s.
    """

    def __init__(self, address: str, connect_timeout: float = 10.0, *, site: str,
                 tls: str | os.PathLike | None = None, call_timeout: float | None = 300.0, audit=None):
        self.site = site
        self.tls = tls
        super().__init__(address, connect_timeout, call_timeout=call_timeout, audit=audit)

    def new_channel(self) -> grpc.Channel:
        if self.tls is None:
            return super().new_channel()
        from tutorial_helpers.sites.tls import Identity

        # A site that comes back is found within 2 s (gRPC's own backoff grows to 2 minutes).
        return Identity(self.tls).secure_channel(self.address, self.site,
                                                 [*GRPC_OPTIONS, ("grpc.max_reconnect_backoff_ms", 2000)])

    def _unreachable(self, why: str) -> ConnectionError:
        return ConnectionError(
            f"Site {self.site!r} does not answer at {self.address} (waited {self.connect_timeout:g} s){why}. Start "
            "it there (`python -m tutorial_helpers.site_server`), reachable from this machine"
            + ("" if self.tls is None else ", with a certificate from the same workshop CA") + ".")

    def __str__(self) -> str:
        return f"site {self.site!r} at {self.address}" + (", mutual TLS" if self.tls else "")
