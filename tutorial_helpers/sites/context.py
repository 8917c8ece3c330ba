"""`create_site_context`: the sites of a round, each described by a `SiteSpec`, started and routed.

Configuration is data: `site_specs` turns the arguments into one `SiteSpec`
per site (where its data is, who runs its worker, what guards it) and checks
that they go together, without starting anything; `start_site` starts what a
spec says; `create_site_context` does both and hands the workers to a
`routing.SiteContext`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from tutorial_helpers.runtime.workers import Worker
from tutorial_helpers.sites.audit import ChannelAudit
from tutorial_helpers.sites.data import CATALOGUE, client_file, read_catalogue
from tutorial_helpers.sites.gatekeeper import Gatekeeper
from tutorial_helpers.sites.routing import SiteContext
from tutorial_helpers.sites.worker import SiteWorker
from tutorial_helpers.worker_process import WorkerProcess

__all__ = ["SiteSpec", "create_site_context", "site_specs", "start_site"]


@dataclasses.dataclass(frozen=True)
class SiteSpec:
    """How one site runs: its data root, the user its worker runs as, its gatekeeper, or a worker it already has.

    `worker` is a worker started elsewhere (a `RemoteWorker`, or one the
    caller started): then nothing is started for the site, and `root`,
    `user` and `gatekeeper` must be None. `tls` is the controller's
    certificate folder, with a gatekeeper that speaks TLS.
    """

    root: Path | None = None
    user: str | None = None
    gatekeeper: Gatekeeper | None = None
    worker: Worker | None = None
    tls: Path | None = None


def site_specs(catalogue: Mapping[str, Sequence[str]], *, roots: Mapping[str, Path] | None = None,
               users: Mapping[str, str] | None = None, gatekeepers: Mapping[str, Gatekeeper] | None = None,
               site_workers: Mapping[str, Worker] | None = None,
               tls: str | os.PathLike | None = None) -> dict[str, SiteSpec]:
    """One `SiteSpec` per site of `catalogue`, from `create_site_context`'s arguments; starts nothing.

    Raises ValueError naming the sites and the arguments that do not go together.
    """
    users, gatekeepers = dict(users or {}), dict(gatekeepers or {})
    for name, given in (("users", users), ("gatekeepers", gatekeepers)):
        if set(given) - set(catalogue):
            raise ValueError(f"{name} names sites that are not in the catalogue: "
                             f"{sorted(set(given) - set(catalogue))}.")
    if gatekeepers and site_workers is not None:
        raise ValueError("gatekeepers are started with the sites' workers: pass either gatekeepers or site_workers.")
    if tls is not None and set(gatekeepers) != set(catalogue):
        raise ValueError(f"tls= needs a gatekeeper for every site (TLS ends at the gatekeeper); these have none: "
                         f"{sorted(set(catalogue) - set(gatekeepers))}.")
    for site, gatekeeper in gatekeepers.items():
        if gatekeeper.tls is not None and tls is None:
            raise ValueError(f"Site {site!r}'s gatekeeper speaks TLS: pass tls= (the workshop folder) too.")
    if site_workers is not None:  # Every worker given is a site's, whether or not the catalogue lists clients there.
        return {site: SiteSpec(worker=worker) for site, worker in site_workers.items()}
    specs = {}
    for site in catalogue:
        gatekeeper = gatekeepers.get(site)
        if gatekeeper is not None:
            gatekeeper = gatekeeper.for_site(site, None if tls is None else Path(tls) / site)
        specs[site] = SiteSpec(root=None if roots is None else roots[site], user=users.get(site),
                               gatekeeper=gatekeeper,
                               tls=None if gatekeeper is None or gatekeeper.tls is None else Path(tls) / "controller")
    return specs


def start_site(spec: SiteSpec, *, audit: ChannelAudit | None = None, call_timeout: float | None = None,
               private_network: bool | None = None) -> Worker:
    """The worker a spec says: its own if it has one, else a `SiteWorker` (with a gatekeeper) or a `WorkerProcess`."""
    if spec.worker is not None:
        return spec.worker
    worker_args = dict(private_network=private_network, cwd=spec.root, user=spec.user, audit=audit,
                       call_timeout=call_timeout)
    if spec.gatekeeper is None:
        return WorkerProcess(**worker_args)
    return SiteWorker(spec.gatekeeper, tls=spec.tls, **worker_args)


def create_site_context(
    catalogue: Mapping[str, Sequence[str]] | None = None,
    *,
    roots: Mapping[str, str | os.PathLike] | None = None,
    site_workers: Mapping[str, Worker] | None = None,
    aggregator: Worker | None = None,
    users: Mapping[str, str] | None = None,
    canaries: Sequence[bytes] = (),
    probes: Sequence[bytes] = (),
    min_sites: int | None = None,
    gatekeepers: Mapping[str, Gatekeeper] | None = None,
    default_num_clients: int = 0,
    private_network: bool | None = None,
    site_timeout: float | None = 300.0,
    tls: str | os.PathLike | None = None,
) -> SiteContext:
    """Returns a context that runs each client's part of a round at the site that holds it.

    Args:
      catalogue: for each site, the ids of the clients whose data it holds;
        by default each root's `catalogue.json`.
      roots: for each site, its data root (as `write_site` made it): its
        worker, started here, runs there, and an error at a site names the
        files of its clients relative to it.
      site_workers: a worker for each site, instead of starting them here
        (for the sites of `catalogue`, or of `roots`).
      users: for each site, the user account its worker runs as (root only;
        `write_site(owner=...)` gives the site's root to that user): then
        neither other sites nor other users can read a site's examples.
      aggregator: the worker that merges the sites' partial aggregates and
        runs computations without client arguments; by default a new one.
      canaries, probes: what the `ChannelAudit` of each worker started here
        looks for in every message (`write_site`'s canaries,
        `example_probes`); every worker started here counts bytes either way.
      min_sites: None (the default) makes a round fail when any of its sites
        fails. A number lets a round go on without the sites that failed,
        as long as at least that many of its sites (or all of them, if it
        has fewer) answered: the result then leaves out the failed sites'
        clients, and `last_round` says which were dropped and why. A site
        that failed is asked before each later round whether it answers
        (`PING_TIMEOUT` seconds); if not, its clients are dropped at once, and
        if it does (it came back), it takes part again (`last_round.returned`).
        A site that only timed out may still be computing the round it
        missed, and then answers at once: it is given the next round on top.
        `replace_site` gives a site a new worker.
      gatekeepers: for each site that has one, its `gatekeeper.Gatekeeper`
        (its approval list, its limit on answers, its audit log), started in
        front of its worker: then the site runs only the computations it
        approved, and a refusal fails the site's part of the round with a
        PermissionError that names the site and the computation's fingerprint.
      tls: a folder made by `python -m tutorial_helpers.tls make` for these
        sites: each site's gatekeeper then speaks only mutual TLS with the
        certificate in the site's subfolder, and the controller connects
        with the one in `controller/`, accepting from each site only a
        certificate that names it. Needs `gatekeepers` (TLS ends there).
      site_timeout: seconds each call to a worker started here may take (a
        site's whole part of a round is one `compute` call) before the call
        fails: a site that stops answering then fails its part instead of
        holding the round forever. None for no limit.
      default_num_clients: for computations whose arguments do not tell.
      private_network: for the workers started here, as in
        `remote_data.create_execution_context`.

    Use it as a context manager or call `close()`: it stops its local
    workers, those passed in included, and disconnects from remote ones.
    """
    if roots is not None:
        roots = {site: Path(root) for site, root in roots.items()}
        for site, root in roots.items():
            if not (root / CATALOGUE).is_file():
                raise FileNotFoundError(f"Site {site!r} has no {CATALOGUE} in its root {root}: make the site's "
                                        "data with write_site(...) first, or give that site's root.")
        if catalogue is None:
            catalogue = {site: list(read_catalogue(root)) for site, root in roots.items()}
        elif set(catalogue) != set(roots):
            raise ValueError(f"The catalogue's sites {sorted(catalogue)} and the roots' {sorted(roots)} differ.")
    if catalogue is None:
        raise ValueError("create_site_context needs a catalogue, or the sites' roots to read theirs from.")
    specs = site_specs(catalogue, roots=roots, users=users, gatekeepers=gatekeepers, site_workers=site_workers,
                       tls=tls)
    started: list[Worker] = []

    def start(spec: SiteSpec) -> Worker:
        worker = start_site(spec, audit=ChannelAudit(tuple(canaries), tuple(probes)), call_timeout=site_timeout,
                            private_network=private_network)
        if worker is not spec.worker:
            started.append(worker)
        return worker

    try:
        workers = {site: start(spec) for site, spec in specs.items()}
        return SiteContext(workers, aggregator or start(SiteSpec()), catalogue, default_num_clients,
                           client_path=None if roots is None else client_file, min_sites=min_sites)
    except BaseException:
        for worker in started:
            worker.stop()
        raise
