"""`Gatekeeper`: what a site's gatekeeper needs, and the command that starts it in front of a worker."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from tutorial_helpers.sites.gatekeeper.policy import read_approvals, read_pins

__all__ = ["Gatekeeper"]

# The port a site's gatekeeper listens on, inside the site's private network (next to the worker's).
GATEKEEPER_PORT = 8001


@dataclasses.dataclass(frozen=True)
class Gatekeeper:
    """What a site's gatekeeper needs: pass one to `sites.worker.SiteWorker` or `sites.create_site_context`.

    Attributes:
      folder: the gatekeeper's folder, with the site's approval list
        (`approved.txt`, made by `approve`), its pinned values (`pins.txt`,
        `pin`) and its audit log (`audit.log`). Keep it outside the site's
        data root; where the worker runs as a user of its own
        (`SiteWorker(user=...)`), that user cannot change it.
      site: the site's name, in errors and the log.
      max_result_bytes: the largest answer the site sends back; None for no
        limit.
      tls: the site's folder from `python -m tutorial_helpers.tls make` (its
        certificate and key, and the workshop's authority): the gatekeeper
        then speaks mutual TLS only, and serves only a client whose
        certificate, from that authority, names `controller`. None: plain
        gRPC (on one machine, where only this user's processes reach it).
      controller: the name the controller's certificate must carry.
    """

    folder: str | os.PathLike
    site: str = "site"
    max_result_bytes: int | None = None
    tls: str | os.PathLike | None = None
    controller: str = "controller"

    def __post_init__(self):
        if not Path(self.folder).is_dir():
            raise FileNotFoundError(f"The gatekeeper's folder {self.folder} of site {self.site!r} does not exist: "
                                    "make it, and approve computations into it with `python -m "
                                    "tutorial_helpers.gatekeeper approve`.")
        read_approvals(self.folder)  # A broken list is reported here, not in the gatekeeper's log.
        read_pins(self.folder)
        if self.max_result_bytes is not None and self.max_result_bytes <= 0:
            raise ValueError(f"max_result_bytes must be a positive number of bytes or None, "
                             f"got {self.max_result_bytes}.")
        if self.tls is not None:
            from tutorial_helpers.sites.tls import Identity

            Identity(self.tls)  # Missing files are reported here, not in the gatekeeper's log.

    def for_site(self, site: str, tls: str | os.PathLike | None = None) -> Gatekeeper:
        """This gatekeeper for `site`, with the site's TLS folder `tls` unless it has one of its own."""
        if site == self.site and (tls is None or self.tls is not None):
            return self
        return dataclasses.replace(self, site=site, tls=self.tls if tls is None or self.tls else tls)

    def command(self, worker: list[str], *, worker_port: int, port: int = GATEKEEPER_PORT,
                worker_user: tuple[int, int] | None = None) -> list[str]:
        """The command that runs this gatekeeper on `port` in front of `worker` (which listens on `worker_port`)."""
        return [sys.executable, "-P", "-m", "tutorial_helpers.sites.gatekeeper", "serve", f"--site={self.site}",
                f"--folder={os.path.abspath(self.folder)}", f"--port={port}", f"--worker-port={worker_port}",
                f"--max-result-bytes={self.max_result_bytes or 0}",
                *([] if self.tls is None else
                  [f"--tls={os.path.abspath(self.tls)}", f"--controller={self.controller}"]),
                *([] if worker_user is None else [f"--worker-user={worker_user[0]}:{worker_user[1]}"]),
                "--", *worker]
