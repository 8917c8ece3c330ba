"""Sites: each round's clients go to the worker of the site that holds them.

What notebook 07 ("data that stays at its site") teaches. A site is a TFF
worker that holds some clients' data; the controller knows only a catalogue,
which clients each site holds. TFF's own
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

A site's data lives in its own root, one folder per site: `write_site`
writes each client's raw examples there (`clients/<id>.tfrecord`, every
record marked with the site's canary) and `catalogue.json` (client ids and
example counts, all the controller needs). A site's worker runs with its root
as working directory (`WorkerProcess(cwd=root)`), and
`site_dataset_computation` reads `clients/<id>.tfrecord` by that relative
path, so each worker opens only its own site's files and the controller sends
only ids. Compose it with a learning process with TFF's
`tff.simulation.compose_dataset_computation_with_learning_process`.

Where the kit runs as root, `write_site(owner=...)` gives a site's root to a
user account of its own and `create_site_context(users=...)` runs the site's
worker as that user: then no other site, and no process without root's power
to override file permissions, can read the site's examples. As one ordinary
user, the sites' files are apart by convention only.

Every worker `create_site_context` starts has a `ChannelAudit`: the bytes of
every message each way, and hits of the sites' canaries and of raw example
bytes (`example_probes`) in them.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import tensorflow as tf
import tensorflow_federated as tff

from tutorial_helpers import data as kit_data
from tutorial_helpers import model
from tutorial_helpers.gatekeeper import Gatekeeper
from tutorial_helpers.runtime.contexts import CONTEXT_ARGS, ClosableContext, executor_factory
from tutorial_helpers.runtime.tff_private import AsyncThreadRunner
from tutorial_helpers.worker_process import ChannelAudit, Worker, WorkerProcess, ping

__all__ = ["RoundReport", "SiteContext", "client_file", "create_site_context", "example_probes", "read_catalogue", "sample_clients",
           "site_dataset_computation", "write_site"]

CLIENTS_FOLDER = "clients"  # In a site's root; a client's file is clients/<id>.tfrecord.
CATALOGUE = "catalogue.json"


# How long a site that failed an earlier round has to answer before a round goes on without it.
PING_TIMEOUT = 2.0


def client_file(client_id: str) -> str:
    """Where a site keeps a client's examples, relative to its root."""
    return f"{CLIENTS_FOLDER}/{client_id}.tfrecord"


_FEATURES = {"label": tf.io.FixedLenFeature([1], tf.int64), "pixels": tf.io.FixedLenFeature([784], tf.float32)}


def write_site(client_data: tff.simulation.datasets.ClientData, client_ids: Sequence[str],
               root: str | os.PathLike, *, canary: bytes, owner: str | None = None) -> dict[str, int]:
    """Writes the raw examples of `client_ids` into a site's `root`; returns each client's count.

    One TFRecord file per client, `clients/<id>.tfrecord`, in the order
    `client_data` gives the examples; every record also carries `canary`, the
    site's mark, which the pipeline ignores and an audit of the traffic looks
    for. `catalogue.json` lists the clients and their counts. The root and its
    folder are made readable by their owner only (mode 0700); with `owner`
    (root only), the user account that runs the site's worker, everything is
    then given to that user, so that other users cannot read the examples.
    """
    root = Path(root)
    folder = root / CLIENTS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for path in (root, folder):
        path.chmod(0o700)
    counts = {}
    for client_id in client_ids:
        count = 0
        with tf.io.TFRecordWriter(str(root / client_file(client_id))) as writer:
            for example in client_data.create_tf_dataset_for_client(client_id).as_numpy_iterator():
                features = {
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(example["label"])])),
                    "pixels": tf.train.Feature(float_list=tf.train.FloatList(value=example["pixels"].ravel())),
                    "canary": tf.train.Feature(bytes_list=tf.train.BytesList(value=[canary])),
                }
                writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())
                count += 1
        counts[client_id] = count
    (root / CATALOGUE).write_text(json.dumps({"clients": counts}, indent=1) + "\n")
    if owner is not None:
        import pwd

        account = pwd.getpwnam(owner)
        for path in (root, folder, root / CATALOGUE, *folder.iterdir()):
            os.chown(path, account.pw_uid, account.pw_gid)
        for path in (root / CATALOGUE, *folder.iterdir()):
            path.chmod(0o600)
    return counts


def read_catalogue(root: str | os.PathLike) -> dict[str, int]:
    """A site's catalogue: its client ids and how many examples each holds (no example)."""
    return dict(json.loads((Path(root) / CATALOGUE).read_text())["clients"])


def example_probes(client_data: tff.simulation.datasets.ClientData, client_ids: Sequence[str], *,
                   per_client: int = 2, floats: int = 16) -> tuple[bytes, ...]:
    """Short runs of raw example bytes, for an audit to look for in the traffic (`ChannelAudit`).

    For each client, `per_client` of its examples (its first, then evenly
    spread), and in each the run of `floats` consecutive pixels (as 32-bit
    little-endian floats, how TensorFlow's tensors and `tf.train.Example`
    store them) that holds the most distinct values, so that it is not blank
    paper (1.0) that any message might hold. A message that carries such an
    example as a record or as a tensor, before or after preprocessing
    (which reshapes, batches and relabels but keeps the pixels), contains it.
    What the site would give an auditor: the controller never needs it.
    """
    import numpy as np

    probes = []
    for client_id in client_ids:
        examples = list(client_data.create_tf_dataset_for_client(client_id).as_numpy_iterator())
        for index in np.linspace(0, len(examples) - 1, min(per_client, len(examples))).astype(int):
            pixels = np.asarray(examples[index]["pixels"], dtype="<f4").ravel()
            windows = np.lib.stride_tricks.sliding_window_view(pixels, floats)
            best = max(range(len(windows)), key=lambda i: len(np.unique(windows[i])))
            probes.append(windows[best].tobytes())
    return tuple(probes)


def site_dataset_computation(
    preprocess_fn: Callable[[tf.data.Dataset], tf.data.Dataset] = kit_data.preprocess,
) -> tff.Computation:
    """A computation from a client id to its dataset, read by a RELATIVE path at the worker.

    Run in a worker whose working directory is a site's root, it opens that
    site's `clients/<id>.tfrecord`; the elements are those of TFF's EMNIST
    (`label`, `pixels` 28x28), then `preprocess_fn`. An id that is not
    letters, digits and `_` (a path such as `../clinic/clients/x`) fails at
    the site, so an approved computation cannot be pointed at another folder.
    """

    @tff.tensorflow.computation(tf.string)
    def dataset_for(client_id):
        def parse(record):
            example = tf.io.parse_single_example(record, _FEATURES)
            return collections.OrderedDict(label=tf.cast(example["label"][0], tf.int32),
                                           pixels=tf.reshape(example["pixels"], [28, 28]))

        # An id is letters, digits and _ only: "../other-site/clients/x" must not reach another folder.
        checked = tf.debugging.Assert(tf.strings.regex_full_match(client_id, "[A-Za-z0-9_]+"),
                                      ["Not a client id (letters, digits and _ only):", client_id])
        with tf.control_dependencies([checked]):
            path = tf.strings.join([CLIENTS_FOLDER + "/", client_id, ".tfrecord"])  # client_file(client_id)
        return preprocess_fn(tf.data.TFRecordDataset(path).map(parse))

    return dataset_for


def build_site_fed_avg(client_learning_rate: float = 0.02, server_learning_rate: float = 1.0):
    """Federated Averaging whose clients are ids, each client's data loaded at its site (notebook 07's)."""
    return tff.simulation.compose_dataset_computation_with_learning_process(
        site_dataset_computation(), model.build_fed_avg(client_learning_rate, server_learning_rate))


def build_site_fed_eval():
    """Federated evaluation of the tutorial's model over client ids, each loaded at its site."""
    return tff.simulation.compose_dataset_computation_with_learning_process(
        site_dataset_computation(), tff.learning.algorithms.build_fed_eval(model.model_fn))


def fed_avg_computations() -> dict[str, tff.Computation]:
    """What a site approves to take part in notebook 07's training and evaluation.

    ``python -m tutorial_helpers.gatekeeper approve FOLDER tutorial_helpers.sites:fed_avg_computations``
    """
    return {"Federated Averaging round (sites.build_site_fed_avg; learning rates come in the state)":
            build_site_fed_avg().next,
            "federated evaluation (sites.build_site_fed_eval)": build_site_fed_eval().next}


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


def sample_clients(catalogue: Mapping[str, Sequence[str]], num_clients: int, seed: int | None = None) -> list[str]:
    """`num_clients` client ids drawn without replacement from all the sites' catalogues.

    Each client is equally likely, wherever it is held (so a large site gets
    more of a round's clients); as the original tutorial's last version
    sampled 10 clients a round. `seed` makes the draw repeatable.
    """
    import random

    everyone = [client for clients in catalogue.values() for client in clients]
    if not 0 < num_clients <= len(everyone):
        raise ValueError(f"num_clients must be between 1 and the {len(everyone)} clients the sites hold, "
                         f"got {num_clients}.")
    return random.Random(seed).sample(everyone, num_clients)


@dataclasses.dataclass
class RoundReport:
    """What the last computation with client arguments did: which sites took part, which were dropped.

    `dropped` maps each site that failed its part to (its clients in that
    round, the reason); those clients' updates and metrics are not in the
    result. Empty when every site answered. `returned` lists the sites that
    had failed in an earlier round and took part again in this one.
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
        self.site_of: dict[str, str] = {}
        for site, clients in catalogue.items():
            for client in clients:
                if client in self.site_of:
                    raise ValueError(f"Client {client!r} is in the catalogues of both {self.site_of[client]!r} "
                                     f"and {site!r}: a client's data is at one site.")
                self.site_of[client] = site

        self._default_num_clients = default_num_clients
        context = self._context
        self.min_sites = min_sites
        self.last_round: RoundReport | None = None
        self.absent: dict[str, str] = {}  # Sites that failed a round, and why; asked again before each round.
        self.sites = dict(sites)
        self.catalogue = {site: list(clients) for site, clients in catalogue.items()}
        self.aggregator = aggregator
        self.client_path = client_path
        self._site_contexts = {site: context(worker) for site, worker in self.sites.items()}
        self._aggregator_context = context(aggregator)
        self._async_runner = AsyncThreadRunner()
        self._forms: dict[int, tuple[Any, Any]] = {}

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
        if hasattr(self, "workers"):
            self.workers = list(dict.fromkeys([*self.sites.values(), self.aggregator]))
        if old is not worker and old not in self.sites.values() and old is not self.aggregator:
            old.stop()

    def _form(self, comp):
        if id(comp) not in self._forms:  # The computation is kept too, so its id stays its own.
            self._forms[id(comp)] = (comp, tff.backends.native.compile_to_mergeable_comp_form(comp))
        return self._forms[id(comp)][1]

    def _groups(self, clients: list) -> dict[str, list[int]]:
        """Positions of the round's clients, by the site that holds them, in the sites' order."""
        by_site: dict[str, list[int]] = {}
        for position, client in enumerate(clients):
            key = _client_id(client)
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
        names = {site: [_client_id(clients[i]) for i in positions] for site, positions in groups.items()}
        report = RoundReport(sites=list(groups))
        failures: list[BaseException] = []
        if self.min_sites is not None:  # A site that left is asked first, all at once: is it back?
            absent = [site for site in groups if site in self.absent]
            for site, reason in zip(absent, await asyncio.gather(*map(self._back, absent)), strict=True):
                if reason is None:
                    report.returned.append(site)
                else:
                    report.dropped[site] = (names[site], reason)
                    failures.append(self._failed(site, names[site], RuntimeError(reason)))
        asked = [site for site in groups if site not in report.dropped]
        tasks = [asyncio.ensure_future(self._up_to_merge(site, form, slices[site], names[site])) for site in asked]
        if self.min_sites is None:  # Any failure fails the round: report it at once, not after the others.
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    for other in tasks:
                        other.cancel()
                    self.last_round = report
                    raise task.exception()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        partials = {}
        for site, outcome in zip(asked, outcomes, strict=True):
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
        report.dropped = {site: report.dropped[site] for site in groups if site in report.dropped}
        self.last_round = report
        # Failures reach here only with min_sites set (without it the round failed above, at once).
        if failures and len(partials) < min(self.min_sites, len(groups)):
            raise RuntimeError(
                f"Only {len(partials)} of the round's {len(groups)} sites answered, fewer than min_sites="
                f"{self.min_sites}: " + "; ".join(str(f) for f in failures)) from failures[0]
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
        self.workers = list(dict.fromkeys([*self.sites.values(), aggregator]))  # Each worker once.

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        sizes = ", ".join(f"{site}: {n} clients at {self.sites[site]}" for site, n in self._sizes())
        return f"<site context: {sizes}; aggregator {self.aggregator}; {state}>"


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
    started: list[WorkerProcess] = []

    def start(cwd=None, user=None, gatekeeper=None) -> WorkerProcess:
        controller = None if gatekeeper is None or gatekeeper.tls is None else Path(tls) / "controller"
        started.append(WorkerProcess(private_network=private_network, cwd=cwd, user=user, gatekeeper=gatekeeper,
                                     audit=ChannelAudit(tuple(canaries), tuple(probes)), call_timeout=site_timeout,
                                     tls=controller))
        return started[-1]

    users, gatekeepers = dict(users or {}), dict(gatekeepers or {})
    for name, given in (("users", users), ("gatekeepers", gatekeepers)):
        if set(given) - set(catalogue):
            raise ValueError(f"{name} names sites that are not in the catalogue: {sorted(set(given) - set(catalogue))}.")
    if gatekeepers and site_workers is not None:
        raise ValueError("gatekeepers are started with the sites' workers: pass either gatekeepers or site_workers.")
    if tls is not None and set(gatekeepers) != set(catalogue):
        raise ValueError(f"tls= needs a gatekeeper for every site (TLS ends at the gatekeeper); these have none: "
                         f"{sorted(set(catalogue) - set(gatekeepers))}.")
    for site, gatekeeper in gatekeepers.items():
        if gatekeeper.tls is not None and tls is None:
            raise ValueError(f"Site {site!r}'s gatekeeper speaks TLS: pass tls= (the workshop folder) too.")
        if gatekeeper.site != site or (tls is not None and gatekeeper.tls is None):
            gatekeepers[site] = dataclasses.replace(
                gatekeeper, site=site, tls=gatekeeper.tls if tls is None or gatekeeper.tls else Path(tls) / site)
    try:
        if site_workers is None:
            site_workers = {site: start(None if roots is None else roots[site], users.get(site), gatekeepers.get(site))
                            for site in catalogue}
        if aggregator is None:
            aggregator = start()
        return SiteContext(site_workers, aggregator, catalogue, default_num_clients,
                           client_path=None if roots is None else client_file, min_sites=min_sites)
    except BaseException:
        for worker in started:
            worker.stop()
        raise
