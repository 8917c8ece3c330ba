"""Several TFF workers, each loading its own clients' data.

With a `DataBackend`, the controller fetches every client's data and sends it
to the worker. TFF's answer for scale is the opposite: send each worker only
the clients' ids, and let the worker build their datasets itself, from
storage it can read. Client data then never passes through the controller.

* `worker_side_process(client_data, process)`: wraps a learning process so
  that `next(state, client_ids)` builds each client's dataset inside the
  worker, with `tff.simulation.compose_dataset_computation_with_learning_process`.
* `create_multi_worker_context(num_workers)`: starts `num_workers` TFF
  workers on this machine (or connects to running ones on other hosts) and
  joins them in TFF's mergeable-computation context, which splits each
  round's clients among them and merges their partial aggregates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf
import tensorflow_federated as tff

from tutorial_helpers import data as kit_data
from tutorial_helpers.runtime.contexts import CONTEXT_ARGS, ClosableContext, executor_factory
from tutorial_helpers.runtime.workers import Worker
from tutorial_helpers.worker_process import RemoteWorker, WorkerProcess


def worker_side_process(
    client_data: tff.simulation.datasets.ClientData,
    process: tff.learning.templates.LearningProcess,
    preprocess_fn: Callable[[tf.data.Dataset], tf.data.Dataset] = kit_data.preprocess,
) -> tff.learning.templates.LearningProcess:
    """Returns `process` taking client ids: each worker builds those clients' datasets.

    `client_data` must be serializable as a computation (TFF's SQLite-backed
    `ClientData`, as `load_emnist` returns, is): what the worker runs is
    "read client <id> from this SQLite file, then `preprocess_fn`". The file
    must be readable by the workers at the same path.
    """
    dataset_computation = client_data.preprocess(preprocess_fn).dataset_computation
    return tff.simulation.compose_dataset_computation_with_learning_process(
        dataset_computation, process
    )


class _MultiWorkerContext(ClosableContext, tff.framework.MergeableCompExecutionContext):
    _created_by = "create_multi_worker_context"

    def __init__(self, workers: list[Worker], default_num_clients: int):
        self.workers = workers
        async_contexts = [
            tff.framework.AsyncExecutionContext(
                executor_fn=executor_factory(worker, default_num_clients), **CONTEXT_ARGS
            )
            for worker in workers
        ]
        super().__init__(
            async_contexts=async_contexts,
            compiler_fn=tff.backends.native.compile_to_mergeable_comp_form,
        )

    @property
    def client_value_bytes(self) -> int:
        """Bytes of CLIENTS-placed values the controller sent to all workers so far."""
        return sum(worker.client_value_bytes for worker in self.workers)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<multi-worker execution context: {', '.join(map(str, self.workers))}, {state}>"


def create_multi_worker_context(
    num_workers: int = 2,
    *,
    addresses: Sequence[str] | None = None,
    default_num_clients: int = 0,
    private_network: bool | None = None,
) -> _MultiWorkerContext:
    """Returns a TFF context that spreads each round's clients over several workers.

    Args:
      num_workers: how many `worker_binary` processes to start on this
        machine (ignored when `addresses` is given).
      addresses: "host:port" of workers already running elsewhere, to use
        instead of starting local ones. That is the whole difference between
        a simulation on one machine and one over many.
      default_num_clients: clients for computations whose arguments do not
        tell (e.g. `initialize()`).
      private_network: for local workers, as in `create_execution_context`.

    Use it as a context manager or call `close()`; local workers are stopped
    then (and at exit, and if this process dies), remote ones disconnected.
    """
    if addresses is not None:
        workers: list[Worker] = [RemoteWorker(address) for address in addresses]
    else:
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}.")
        workers = []
        try:
            for _ in range(num_workers):
                workers.append(WorkerProcess(private_network=private_network))
        except BaseException:
            for worker in workers:
                worker.stop()
            raise
    return _MultiWorkerContext(workers, default_num_clients)
