"""Sites: each round's clients go to the worker of the site that holds them.

The first part of "data that never leaves its site" (not yet taught in a
notebook). A site is a TFF worker that holds some clients' data; the
controller knows only a catalogue, which clients each site holds. TFF's own
`MergeableCompExecutionContext` cuts a round's clients into contiguous slices
of equal size, one per worker, so a client reaches the worker that holds it
only by chance, and it merges partial aggregates on whichever worker finished
(one site's aggregate then travels to another site). `SiteContext` instead:

* compiles each computation with TFF's public
  `tff.backends.native.compile_to_mergeable_comp_form` (cached);
* groups the CLIENTS-placed argument by the catalogue (uneven groups are
  fine) and runs `up_to_merge` on each site's worker, concurrently;
* runs `merge` and `after_merge` on an aggregator worker that holds no data,
  so no site's partial aggregate reaches another site;
* runs computations without client arguments (`initialize`,
  `get_model_weights`) whole on the aggregator;
* refuses a client that no site's catalogue lists, naming it.

Used with `multi_worker.worker_side_process`, what a site receives is the
ids of its own clients, and each worker builds their datasets itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow_federated as tff

from tutorial_helpers.runtime.contexts import CONTEXT_ARGS, ClosableContext, executor_factory
from tutorial_helpers.runtime.tff_private import AsyncThreadRunner
from tutorial_helpers.worker_process import Worker, WorkerProcess

__all__ = ["SiteContext", "create_site_context"]


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


class _SiteRouting(tff.framework.SyncContext):
    """The routing itself; `SiteContext` adds closing and interrupts (`ClosableContext`)."""

    def __init__(self, sites: Mapping[str, Worker], aggregator: Worker, catalogue: Mapping[str, Sequence[str]],
                 default_num_clients: int):
        if not sites:
            raise ValueError("A SiteContext needs at least one site.")
        unknown = sorted(set(catalogue) - set(sites))
        if unknown:
            raise ValueError(f"The catalogue names sites without a worker: {unknown}; the sites are {sorted(sites)}.")
        self.site_of: dict[str, str] = {}
        for site, clients in catalogue.items():
            for client in clients:
                if client in self.site_of:
                    raise ValueError(f"Client {client!r} is in the catalogues of both {self.site_of[client]!r} "
                                     f"and {site!r}: a client's data is at one site.")
                self.site_of[client] = site

        def context(worker: Worker) -> tff.framework.AsyncExecutionContext:
            return tff.framework.AsyncExecutionContext(
                executor_fn=executor_factory(worker, default_num_clients), **CONTEXT_ARGS)

        self.sites = dict(sites)
        self.aggregator = aggregator
        self._site_contexts = {site: context(worker) for site, worker in self.sites.items()}
        self._aggregator_context = context(aggregator)
        self._async_runner = AsyncThreadRunner()
        self._forms: dict[int, tuple[Any, Any]] = {}

    def _form(self, comp):
        if id(comp) not in self._forms:  # The computation is kept too, so its id stays its own.
            self._forms[id(comp)] = (comp, tff.backends.native.compile_to_mergeable_comp_form(comp))
        return self._forms[id(comp)][1]

    def _groups(self, clients: list) -> dict[str, list[int]]:
        """Positions of the round's clients, by the site that holds them, in the sites' order."""
        by_site: dict[str, list[int]] = {}
        for position, client in enumerate(clients):
            key = client.decode() if isinstance(client, bytes) else client
            site = self.site_of.get(key)
            if site is None:
                raise LookupError(
                    f"Client {key!r} is in no site's catalogue, so no site would load its data. The sites "
                    f"hold {len(self.site_of)} clients: {', '.join(f'{s} ({n})' for s, n in self._sizes())}.")
            by_site.setdefault(site, []).append(position)
        return {site: by_site[site] for site in self.sites if site in by_site}

    def _sizes(self) -> list[tuple[str, int]]:
        return [(site, sum(1 for s in self.site_of.values() if s == site)) for site in self.sites]

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
        groups = self._groups(clients)
        slices = {site: _take(arg, parameter, positions) for site, positions in groups.items()}
        partials = await asyncio.gather(*(
            self._site_contexts[site].invoke(form.up_to_merge, slices[site]) for site in groups))
        merged = partials[0]
        for partial in partials[1:]:
            merged = await self._aggregator_context.invoke(form.merge, tff.structure.Struct.unnamed(merged, partial))
        # after_merge takes (original argument, merged result); its result is the same
        # whichever slice of the argument it gets (TFF's own context passes the first).
        first = slices[next(iter(groups))]
        return await self._aggregator_context.invoke(form.after_merge, tff.structure.Struct.unnamed(first, merged))

    def invoke(self, comp, arg):
        return self._async_runner.run_coro_and_return_result(self._route(comp, arg))


class SiteContext(ClosableContext, _SiteRouting):
    """A TFF context that sends each client to its site's worker and merges on an aggregator."""

    _created_by = "create_site_context"

    def __init__(self, sites: Mapping[str, Worker], aggregator: Worker, catalogue: Mapping[str, Sequence[str]],
                 default_num_clients: int = 0):
        _SiteRouting.__init__(self, sites, aggregator, catalogue, default_num_clients)
        self.workers = list(dict.fromkeys([*self.sites.values(), aggregator]))  # Each worker once.

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        sizes = ", ".join(f"{site}: {n} clients at {self.sites[site]}" for site, n in self._sizes())
        return f"<site context: {sizes}; aggregator {self.aggregator}; {state}>"


def create_site_context(
    catalogue: Mapping[str, Sequence[str]],
    *,
    site_workers: Mapping[str, Worker] | None = None,
    aggregator: Worker | None = None,
    default_num_clients: int = 0,
    private_network: bool | None = None,
) -> SiteContext:
    """Returns a context that runs each client's part of a round at the site that holds it.

    Args:
      catalogue: for each site, the ids of the clients whose data it holds.
      site_workers: a worker for each site of the catalogue; by default one
        `WorkerProcess` each, started here (and stopped by `close()`).
      aggregator: the worker that merges the sites' partial aggregates and
        runs computations without client arguments; by default a new one.
      default_num_clients: for computations whose arguments do not tell.
      private_network: for the workers started here, as in
        `remote_data.create_execution_context`.

    Use it as a context manager or call `close()`: it stops its local
    workers, those passed in included, and disconnects from remote ones.
    """
    started: list[WorkerProcess] = []
    try:
        if site_workers is None:
            site_workers = {}
            for site in catalogue:
                started.append(WorkerProcess(private_network=private_network))
                site_workers[site] = started[-1]
        if aggregator is None:
            started.append(WorkerProcess(private_network=private_network))
            aggregator = started[-1]
        return SiteContext(site_workers, aggregator, catalogue, default_num_clients)
    except BaseException:
        for worker in started:
            worker.stop()
        raise
