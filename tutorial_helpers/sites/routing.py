"""Routing: each round's clients go to the worker of the site that holds them.

What notebook 07 ("data that stays at its site") teaches. A site is a TFF
worker that holds some clients' data; the controller knows only a catalogue,
which clients each site holds. TFF's own
`MergeableCompExecutionContext` cuts a round's clients into contiguous slices
of equal size, one per worker, so a client reaches the worker that holds it
only by chance, and it merges partial aggregates on whichever worker finished
(one site's aggregate then travels to another site). `SiteContext` instead:

* compiles each computation with TFF's public
  `tff.backends.native.compile_to_mergeable_comp_form` (cached);
* groups the CLIENTS-placed argument by the catalogue (`plan_round`; uneven
  groups are fine) and runs `up_to_merge` on each site's worker, concurrently;
* runs `merge` and `after_merge` on an aggregator worker that holds no data,
  so no site's partial aggregate reaches another site;
* runs computations without client arguments (`initialize`,
  `get_model_weights`) whole on the aggregator;
* refuses a client that no site's catalogue lists, naming it.

What leaves a site is its partial aggregate: the sum of its clients' model
updates and metrics for the round. That is computed from their examples; a
round with one client of a site sends that client's update.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
import tensorflow_federated as tff

from tutorial_helpers.runtime.contexts import CONTEXT_ARGS, ClosableContext, executor_factory
from tutorial_helpers.runtime.tff_private import AsyncThreadRunner
from tutorial_helpers.runtime.workers import Worker
from tutorial_helpers.sites.audit import ChannelAudit
from tutorial_helpers.worker_process import ping

__all__ = ["PING_TIMEOUT", "RoundReport", "SiteContext", "catalogue_index", "plan_round", "sample_clients"]

# How long a site that failed an earlier round has to answer before a round goes on without it.
PING_TIMEOUT = 2.0


def catalogue_index(catalogue: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """{client id: its site} from the sites' catalogues; ValueError for a client two sites list."""
    site_of: dict[str, str] = {}
    for site, clients in catalogue.items():
        for client in clients:
            if client in site_of:
                raise ValueError(f"Client {client!r} is in the catalogues of both {site_of[client]!r} "
                                 f"and {site!r}: a client's data is at one site.")
            site_of[client] = site
    return site_of


def plan_round(catalogue: Mapping[str, Sequence[str]], clients: Sequence[str],
               index: Mapping[str, str] | None = None) -> dict[str, list[int]]:
    """Which of a round's `clients` (by position) each site runs: {site: positions}, in the catalogue's order.

    Sites with none of the round's clients are left out. LookupError names
    a client that no catalogue lists. `index` is `catalogue_index(catalogue)`
    if the caller has it already. Starts nothing: what a round will ask of
    each site, decided before any site is asked.
    """
    site_of = catalogue_index(catalogue) if index is None else index
    by_site: dict[str, list[int]] = {}
    for position, client in enumerate(clients):
        site = site_of.get(client)
        if site is None:
            sizes = ", ".join(f"{s} ({len(held)})" for s, held in catalogue.items())
            raise LookupError(f"Client {client!r} is in no site's catalogue, so no site would load its data. "
                              f"The sites hold {len(site_of)} clients: {sizes}.")
        by_site.setdefault(site, []).append(position)
    return {site: by_site[site] for site in catalogue if site in by_site}


def _client_id(client) -> str:
    return client.decode() if isinstance(client, bytes) else str(client)


def _is_client_values(type_spec: tff.Type) -> bool:
    """One value per client: CLIENTS-placed and not all equal."""
    return (isinstance(type_spec, tff.FederatedType) and type_spec.placement is tff.CLIENTS
            and not type_spec.all_equal)


def _contains_client_values(type_spec: tff.Type) -> bool:
    if _is_client_values(type_spec):
        return True
    if isinstance(type_spec, tff.StructType):
        return any(_contains_client_values(element) for _, element in tff.structure.iter_elements(type_spec))
    return False


def _client_values(value: Any, type_spec: tff.Type) -> list | None:
    """The first per-client list in `value` (a value of `type_spec`), or None if it has none."""
    if _is_client_values(type_spec):
        return list(value)
    if isinstance(type_spec, tff.StructType):
        elements = tff.structure.iter_elements(tff.structure.from_container(value))
        for (_, element), (_, element_type) in zip(elements, tff.structure.iter_elements(type_spec),
                                                   strict=True):
            found = _client_values(element, element_type)
            if found is not None:
                return found
    return None


def _take(value: Any, type_spec: tff.Type, positions: Sequence[int]) -> Any:
    """`value` with each per-client list cut down to the clients at `positions`."""
    if _is_client_values(type_spec):
        return [value[i] for i in positions]
    if isinstance(type_spec, tff.StructType):
        elements = tff.structure.iter_elements(tff.structure.from_container(value))
        return tff.structure.Struct([
            (name, _take(element, element_type, positions))
            for (name, element), (_, element_type) in zip(elements, tff.structure.iter_elements(type_spec),
                                                          strict=True)
        ])
    return value


def sample_clients(catalogue: Mapping[str, Sequence[str]], num_clients: int, seed: int | None = None, *,
                   min_per_site: Mapping[str, int] | None = None) -> list[str]:
    """`num_clients` client ids drawn without replacement from all the sites' catalogues.

    Each client is equally likely, wherever it is held (so a large site gets
    more of a round's clients); as the original tutorial's last version
    sampled 10 clients a round. `seed` makes the draw repeatable.

    `min_per_site` ({site: k}, the sites' own minimums, `limits.txt`): a site
    in the round then gets at least k of its clients, or none. The draw is
    repeated (with the same seed, the same repeats) until it meets them;
    ValueError if 1,000 draws did not.
    """
    import random

    everyone = [client for clients in catalogue.values() for client in clients]
    if not 0 < num_clients <= len(everyone):
        raise ValueError(f"num_clients must be between 1 and the {len(everyone)} clients the sites hold, "
                         f"got {num_clients}.")
    minimums = dict(min_per_site or {})
    if set(minimums) - set(catalogue):
        raise ValueError(f"min_per_site names sites that are not in the catalogue: "
                         f"{sorted(set(minimums) - set(catalogue))}.")
    draws = random.Random(seed)
    index = catalogue_index(catalogue)
    for _ in range(1000):
        drawn = draws.sample(everyone, num_clients)
        counts = collections.Counter(index[client] for client in drawn)
        if all(counts[site] == 0 or counts[site] >= k for site, k in minimums.items()):
            return drawn
    raise ValueError(f"1,000 draws of {num_clients} clients gave no round in which each site has none or at "
                     f"least its minimum of clients ({minimums}): draw more clients a round, or ask the sites "
                     "for lower minimums.")


@dataclasses.dataclass
class RoundReport:
    """What the last computation with client arguments did: which sites took part, which were dropped.

    `sites` are the sites the round asked. `dropped` maps each site that
    failed its part and was left out to (its clients in that round, the
    reason); those clients' updates and metrics are not in the result.
    Sites are left out only with `min_sites`: without it, a site that fails
    fails the whole round (the error names it), and `dropped` stays empty.
    `returned` lists the sites that had failed in an earlier round and took
    part again in this one.
    """

    sites: list[str]
    dropped: dict[str, tuple[list[str], str]] = dataclasses.field(default_factory=dict)
    returned: list[str] = dataclasses.field(default_factory=list)  # Sites that had left and answered again.

    @property
    def dropped_clients(self) -> list[str]:
        return [client for clients, _ in self.dropped.values() for client in clients]


class _SiteRouting(tff.framework.SyncContext):
    """The routing itself; `SiteContext` adds closing and interrupts (`ClosableContext`)."""

    def __init__(self, sites: Mapping[str, Worker], aggregator: Worker, catalogue: Mapping[str, Sequence[str]],
                 default_num_clients: int, client_path: Callable[[str], str] | None = None,
                 min_sites: int | None = None):
        if not sites:
            raise ValueError("A SiteContext needs at least one site.")
        if min_sites is not None and not 1 <= min_sites <= len(sites):
            raise ValueError(f"min_sites must be between 1 and the {len(sites)} sites, or None (every site of "
                             f"a round must answer), got {min_sites}.")
        unknown = sorted(set(catalogue) - set(sites))
        if unknown:
            raise ValueError(f"The catalogue names sites without a worker: {unknown}; the sites are {sorted(sites)}.")
        self.site_of = catalogue_index(catalogue)
        self.sites = dict(sites)
        # In the sites' order: the order in which partial aggregates are merged (so, the result's bits).
        self.catalogue = {site: list(catalogue.get(site, ())) for site in self.sites}
        self.aggregator = aggregator
        self.client_path = client_path
        self.min_sites = min_sites
        self.last_round: RoundReport | None = None
        self.absent: dict[str, str] = {}  # Sites that failed a round, and why; asked again before each round.
        self._default_num_clients = default_num_clients
        self._site_contexts = {site: self._context(worker) for site, worker in self.sites.items()}
        self._aggregator_context = self._context(aggregator)
        self._async_runner = AsyncThreadRunner()
        self._forms: dict[int, tuple[Any, Any]] = {}

    @property
    def workers(self) -> list[Worker]:
        """Every worker of this context, each once: the sites' and the aggregator (what `close` stops)."""
        return list(dict.fromkeys([*self.sites.values(), self.aggregator]))

    def _context(self, worker: Worker) -> tff.framework.AsyncExecutionContext:
        return tff.framework.AsyncExecutionContext(
            executor_fn=executor_factory(worker, self._default_num_clients), **CONTEXT_ARGS)

    def replace_site(self, site: str, worker: Worker) -> None:
        """Gives `site` a new worker (the site came back), used from the next computation on.

        The old worker is stopped if the kit started it, or disconnected.
        """
        if site not in self.sites:
            raise KeyError(f"No site {site!r}; the sites are {sorted(self.sites)}.")
        old, self.sites[site] = self.sites[site], worker
        self._site_contexts[site] = self._context(worker)
        self.absent.pop(site, None)
        if old is not worker and old not in self.workers:
            old.stop()

    def _form(self, comp):
        if id(comp) not in self._forms:  # The computation is kept too, so its id stays its own.
            self._forms[id(comp)] = (comp, tff.backends.native.compile_to_mergeable_comp_form(comp))
        return self._forms[id(comp)][1]

    def _sizes(self) -> list[tuple[str, int]]:
        return [(site, len(clients)) for site, clients in self.catalogue.items()]

    async def _route(self, comp, arg):
        form = self._form(comp)
        parameter = form.up_to_merge.type_signature.parameter
        clients = None if arg is None or parameter is None else _client_values(arg, parameter)
        if not clients:  # No client values (or none at all): the aggregator runs it whole.
            return await self._aggregator_context.invoke(comp, arg)
        if _contains_client_values(form.after_merge.type_signature.result):
            raise NotImplementedError(
                "This computation returns values placed at the clients; a SiteContext runs only "
                "computations whose results are placed at the server (as a training round's are).")
        ids = [_client_id(client) for client in clients]
        groups = plan_round(self.catalogue, ids, self.site_of)
        slices = {site: _take(arg, parameter, positions) for site, positions in groups.items()}
        names = {site: [ids[i] for i in positions] for site, positions in groups.items()}
        report = RoundReport(sites=list(groups))
        self.last_round = report
        failures = await self._ask_absent_sites(report, names) if self.min_sites is not None else []
        partials = await self._run_sites(form, slices, names, report, failures)
        report.dropped = {site: report.dropped[site] for site in groups if site in report.dropped}
        # Failures reach here only with min_sites set (without it the round failed in _run_sites, at once).
        if failures and len(partials) < min(self.min_sites, len(groups)):
            raise RuntimeError(
                f"Only {len(partials)} of the round's {len(groups)} sites answered, fewer than min_sites="
                f"{self.min_sites}: " + "; ".join(str(f) for f in failures)) from failures[0]
        return await self._merge(form, slices, partials)

    async def _ask_absent_sites(self, report: RoundReport, names: dict[str, list[str]]) -> list[BaseException]:
        """Asks the round's sites that had left, all at once, whether they are back; drops those that are not."""
        failures: list[BaseException] = []
        absent = [site for site in report.sites if site in self.absent]
        for site, reason in zip(absent, await asyncio.gather(*map(self._back, absent)), strict=True):
            if reason is None:
                report.returned.append(site)
            else:
                report.dropped[site] = (names[site], reason)
                failures.append(self._failed(site, names[site], RuntimeError(reason)))
        return failures

    async def _run_sites(self, form, slices: dict, names: dict[str, list[str]], report: RoundReport,
                         failures: list[BaseException]) -> dict[str, Any]:
        """Each asked site's partial aggregate; a site that fails is dropped (with min_sites) or fails the round."""
        asked = [site for site in report.sites if site not in report.dropped]
        tasks = [asyncio.ensure_future(self._up_to_merge(site, form, slices[site], names[site])) for site in asked]
        if self.min_sites is None:  # Any failure fails the round: report it at once, not after the others.
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    for other in tasks:
                        other.cancel()
                    raise task.exception()
        partials = {}
        for site, outcome in zip(asked, await asyncio.gather(*tasks, return_exceptions=True), strict=True):
            if isinstance(outcome, asyncio.CancelledError):
                raise outcome
            if isinstance(outcome, BaseException):
                report.dropped[site] = (names[site], str(outcome.__cause__ or outcome))
                if not isinstance(outcome, PermissionError):  # A site that said no is there: not absent.
                    self.absent[site] = report.dropped[site][1]
                failures.append(outcome)
            else:
                partials[site] = outcome
                self.absent.pop(site, None)
        return partials

    async def _merge(self, form, slices: dict, partials: dict[str, Any]):
        """Merges the partial aggregates on the aggregator, in the sites' order, and runs `after_merge` there."""
        merged = None
        for partial in partials.values():
            merged = partial if merged is None else await self._aggregator_context.invoke(
                form.merge, tff.structure.Struct.unnamed(merged, partial))
        # after_merge takes (original argument, merged result); its result is the same
        # whichever slice of the argument it gets (TFF's own context passes the first).
        first = slices[next(iter(partials))]
        return await self._aggregator_context.invoke(form.after_merge, tff.structure.Struct.unnamed(first, merged))

    async def _up_to_merge(self, site: str, form, arg, ids: list[str]):
        try:
            return await self._site_contexts[site].invoke(form.up_to_merge, arg)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                seconds = getattr(self.sites[site], "call_timeout", None)
                timeout = TimeoutError(
                    ("it did not answer in time" if seconds is None else f"it did not answer within {seconds:g} s")
                    + " (its worker's call_timeout, which create_site_context's site_timeout sets: raise it "
                    "if the site's part of a round takes that long)")
                raise self._failed(site, ids, timeout) from timeout
            if e.code() != grpc.StatusCode.PERMISSION_DENIED:  # Not a site's gatekeeper saying no.
                raise self._failed(site, ids, e) from e
            raise PermissionError(f"{e.details()} (clients {', '.join(map(repr, ids))})") from None
        except Exception as e:
            raise self._failed(site, ids, e) from e

    async def _back(self, site: str) -> str | None:
        """None if `site`, which failed an earlier round, answers now; otherwise why it is still left out."""
        try:
            await asyncio.to_thread(ping, self.sites[site], PING_TIMEOUT)
        except Exception as e:
            now = e.details() if isinstance(e, grpc.RpcError) else str(e).split(". Its log")[0]
            return (f"it failed an earlier round and does not answer yet ({now}); it is asked again before each "
                    "round, and replace_site gives it a new worker")
        return None

    def _failed(self, site: str, ids: list[str], e: Exception) -> RuntimeError:
        where = ("" if self.client_path is None else
                 f" (their data at that site: {', '.join(map(self.client_path, ids))}, relative to its root)")
        return RuntimeError(f"Site {site!r} ({self.sites[site]}) failed its part of the round, for "
                            f"clients {', '.join(map(repr, ids))}{where}: {type(e).__name__}: {e}")

    def invoke(self, comp, arg):
        return self._async_runner.run_coro_and_return_result(self._route(comp, arg))

    def traffic(self) -> dict[str, tuple[int, int]]:
        """Bytes sent to and received from each site's worker and the aggregator so far.

        From each worker's `ChannelAudit` (workers started without one are
        left out); subtract two readings for what a round moved.
        """
        return {name: (audit.bytes_sent, audit.bytes_received) for name, audit in self.audits().items()}

    def audits(self) -> dict[str, ChannelAudit]:
        """Each site's worker's `ChannelAudit`, and the aggregator's (workers without one left out)."""
        workers = {**self.sites, "aggregator": self.aggregator}
        return {name: worker.audit for name, worker in workers.items() if getattr(worker, "audit", None) is not None}

    def run_at_site(self, site: str, comp, arg=None):
        """Runs `comp` whole on one site's worker and returns its result.

        What any controller can do: a worker runs whatever it is sent, a read
        of the site's files included. The kit uses it to show that, and that
        the channel audit catches what comes back. A site with a gatekeeper
        runs only what it approved: anything else raises PermissionError.
        """
        try:
            return self._async_runner.run_coro_and_return_result(self._site_contexts[site].invoke(comp, arg))
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.PERMISSION_DENIED:  # The site's gatekeeper said no.
                raise PermissionError(e.details()) from None
            raise


class SiteContext(ClosableContext, _SiteRouting):
    """A TFF context that sends each client to its site's worker and merges on an aggregator."""

    _created_by = "create_site_context"

    def __init__(self, sites: Mapping[str, Worker], aggregator: Worker, catalogue: Mapping[str, Sequence[str]],
                 default_num_clients: int = 0, client_path: Callable[[str], str] | None = None,
                 min_sites: int | None = None):
        _SiteRouting.__init__(self, sites, aggregator, catalogue, default_num_clients, client_path, min_sites)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        sizes = ", ".join(f"{site}: {n} clients at {self.sites[site]}" for site, n in self._sizes())
        return f"<site context: {sizes}; aggregator {self.aggregator}; {state}>"


