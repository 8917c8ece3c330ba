"""The "Loading Remote Data" programming model, on TFF 0.87's C++ runtime.

TFF used to let Python code resolve data references: a `DataBackend` turned a
URI such as ``uri://3`` into a client's dataset, a `DataExecutor` asked it
whenever a computation met such a reference, and an execution context put the
two in front of the runtime. TFF's release notes record that 0.54 removed
`DataBackend`, `DataExecutor`, `EagerTFExecutor` and `local_executor_factory`
from `tff.framework`, and that 0.55 deleted the Python runtime. This module
brings the same three pieces back, built on what TFF 0.87 still has:

* `DataBackend`: the abstract base you subclass (one method, `materialize`).
* `DataExecutor`: an executor that resolves data references with a backend
  and forwards everything else, untouched, to TFF's `RemoteExecutor`.
* `create_execution_context`: starts TFF's own C++ `worker_binary`, puts a
  `DataExecutor` in front of it, and returns a synchronous execution context
  for `tff.framework.set_default_context`.

What runs where: `materialize` runs in this Python process (the controller).
What it returns is serialized and sent to the worker, which runs it. A
`tf.data.Dataset` is a program: one built from tensors in memory carries its
examples along; one that reads a file (as TFF's EMNIST datasets read an
SQLite file) carries only the instructions, and the worker reads the file.
TFF's answer for data that should never pass through the controller, workers
that build their datasets themselves, is in `tutorial_helpers.multi_worker`.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from typing import Any

import tensorflow_federated as tff
from tensorflow_federated.proto.v0 import computation_pb2 as pb

from tutorial_helpers.runtime.contexts import CONTEXT_ARGS, ClosableContext, executor_factory
from tutorial_helpers.runtime.tff_private import Executor, tensorflow_infer_type
from tutorial_helpers.worker_process import WorkerProcess

__all__ = ["DataBackend", "DataExecutor", "create_execution_context"]


class DataBackend(abc.ABC):
    """Resolves references to data into the data itself.

    A computation's argument may contain `pb.Data` references (built by
    `tff.framework.CreateDataDescriptor`), each naming some data by a URI.
    When the runtime meets one, it calls `materialize` on the backend of the
    current execution context.

    Contract of `materialize(data, type_spec)`:

    * `data` is the `pb.Data` message; its `uri` field is the string the
      caller passed, e.g. ``"uri://3"``. The backend decides what a URI means.
    * `type_spec` is the TFF type the computation expects for this one item,
      e.g. `tff.SequenceType(...)` for a client's dataset (the placement is
      not part of it).
    * It returns a value TFF can take as that type: for a sequence type, a
      `tf.data.Dataset` whose element type is assignable to the expected one.
    * It raises an exception, with a message naming the URI, for a URI it
      cannot resolve. It never returns `None` to mean "not found".
    * It is a coroutine: the executor materializes all clients of a round at
      once, so it waits on I/O with `await`, never by blocking.
    """

    @abc.abstractmethod
    async def materialize(self, data: pb.Data, type_spec: tff.Type) -> Any:
        """Returns the payload that `data.uri` refers to, as a `type_spec` value."""
        raise NotImplementedError


def _check_backend(data_backend: Any) -> None:
    if not isinstance(data_backend, DataBackend):
        raise TypeError(
            f"data_backend must be an instance of a DataBackend subclass, got "
            f"{type(data_backend).__name__}. Subclass tutorial_helpers.remote_data.DataBackend "
            "and implement `async def materialize(self, data, type_spec)`."
        )


def _is_data_reference(value: Any) -> bool:
    return isinstance(value, pb.Computation) and value.WhichOneof("computation") == "data"


class DataExecutor(Executor):
    """Resolves data references with a `DataBackend`; delegates everything else.

    `create_value` materializes a `pb.Computation` whose oneof is `data`, and
    every such member of a CLIENTS-placed list, concurrently; the payloads are
    checked against the expected type and passed on to `target_executor`.
    All other calls go to `target_executor` unchanged.

    Args:
      target_executor: the executor that runs computations, here TFF's
        `RemoteExecutor` talking to a `worker_binary`.
      data_backend: the `DataBackend` that resolves URIs.
    """

    def __init__(self, target_executor: Executor, data_backend: DataBackend):
        if not isinstance(target_executor, Executor):
            raise TypeError(
                f"target_executor must be a TFF executor, got {type(target_executor).__name__}."
            )
        _check_backend(data_backend)
        self._target = target_executor
        self._backend = data_backend

    async def _materialize(self, comp: pb.Computation, type_spec: tff.Type | None) -> Any:
        if type_spec is None:
            type_spec = tff.types.deserialize_type(comp.type)
        uri = comp.data.uri
        backend_name = type(self._backend).__name__
        try:
            payload = await self._backend.materialize(comp.data, type_spec)
        except Exception as e:
            raise RuntimeError(
                f"{backend_name}.materialize failed for URI {uri!r}: {type(e).__name__}: {e}"
            ) from e
        try:
            actual = tensorflow_infer_type(payload)
        except (NotImplementedError, TypeError, ValueError):  # Not a value TFF knows.
            actual = None
        if actual is None or not type_spec.is_assignable_from(actual):
            raise TypeError(
                f"{backend_name}.materialize returned a payload that does not match the "
                f"expected type for URI {uri!r}: expected {type_spec}, got "
                f"{actual if actual is not None else type(payload).__name__}. Make the backend "
                "return data of the declared type, or declare the type it returns in "
                "CreateDataDescriptor(arg_type=...)."
            )
        return payload

    async def _materialize_all(self, items: list[Any], member_type: tff.Type) -> list[Any]:
        """Materializes the data references among `items` concurrently.

        Returns `items` with each reference replaced by its payload. The first
        failure cancels the fetches still running and, once all have ended, the
        earliest failure in URI order is raised. If the caller is cancelled,
        every fetch is cancelled too, and the CancelledError propagates only
        after all of them have ended: no fetch outlives this call.
        """
        tasks = {
            i: asyncio.ensure_future(self._materialize(item, member_type))
            for i, item in enumerate(items)
            if _is_data_reference(item)
        }
        if not tasks:
            return items
        try:
            done, _ = await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_EXCEPTION)
        finally:
            # After a failure, or when the caller is cancelled: stop the fetches
            # still running (cancel() does nothing to one that has ended) and wait
            # for all of them, retrieving their exceptions so asyncio logs none.
            # Should the caller be cancelled again meanwhile, gather() passes that
            # on to the fetches and still raises only after every one has ended.
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
        for task in tasks.values():  # In URI order.
            if task in done and (task.cancelled() or task.exception() is not None):
                task.result()  # Raises what the fetch raised.
        return [tasks[i].result() if i in tasks else item for i, item in enumerate(items)]

    async def create_value(self, value, type_spec=None):
        if _is_data_reference(value):
            value = await self._materialize(value, type_spec)
        elif (
            isinstance(type_spec, tff.FederatedType)
            and type_spec.placement is tff.CLIENTS
            and not type_spec.all_equal
            and isinstance(value, (list, tuple))
        ):
            value = await self._materialize_all(list(value), type_spec.member)
        return await self._target.create_value(value, type_spec)

    async def create_call(self, comp, arg=None):
        return await self._target.create_call(comp, arg)

    async def create_struct(self, elements):
        return await self._target.create_struct(elements)

    async def create_selection(self, source, index):
        return await self._target.create_selection(source, index)

    def close(self):
        self._target.close()


class _WorkerExecutionContext(ClosableContext, tff.framework.SyncExecutionContext):
    """A synchronous context on one `WorkerProcess`, with a `DataExecutor` in front."""

    def __init__(self, data_backend: DataBackend, worker: WorkerProcess, default_num_clients: int,
                 data_executor=DataExecutor):
        self.data_backend = data_backend
        self.worker = worker
        self.workers = [worker]
        super().__init__(
            executor_fn=executor_factory(worker, default_num_clients,
                                         lambda target: data_executor(target, data_backend)),
            **CONTEXT_ARGS,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<execution context: {type(self.data_backend).__name__} in front of TFF worker "
            f"pid {self.worker.pid} at {self.worker.address}, {state}>"
        )


def create_execution_context(
    data_backend: DataBackend,
    *,
    default_num_clients: int = 0,
    max_concurrent_computation_calls: int = -1,
    startup_timeout: float = 60.0,
    private_network: bool | None = None,
    data_executor: Callable[[Executor, DataBackend], Executor] = DataExecutor,
) -> _WorkerExecutionContext:
    """Returns a TFF execution context that resolves data URIs with `data_backend`.

    It starts one TFF `worker_binary`, reachable only by this user where the
    system allows it, and waits until it answers. Computations run there;
    data references in their arguments are materialized by `data_backend` on
    the way in.

    Make it the default context with `tff.framework.set_default_context(ctx)`
    and call `ctx.close()` when done, or use it as a context manager, which
    makes it current inside the block and stops the worker on leaving it. The
    worker is also stopped at interpreter exit and if this process dies.

    Args:
      data_backend: an instance of a `DataBackend` subclass.
      default_num_clients: the number of clients for computations whose
        arguments do not tell it (e.g. `initialize()`).
      max_concurrent_computation_calls: the worker's limit on concurrent
        calls; nonpositive means none.
      startup_timeout: seconds to wait for the worker to start.
      private_network: whether to contain the worker in a network of its
        own (see `tutorial_helpers.worker_process.WorkerProcess`): None, the
        default, contains it where the system allows and warns where not.
      data_executor: what resolves the data references: called with TFF's
        `RemoteExecutor` and `data_backend`, it returns the executor the
        context uses. The default is this module's `DataExecutor`; notebook
        03 passes the one it builds step by step.
    """
    _check_backend(data_backend)
    if not callable(data_executor):
        raise TypeError(
            f"data_executor must be a class or function taking (target_executor, data_backend), "
            f"got {data_executor!r}."
        )
    worker = WorkerProcess(
        max_concurrent_computation_calls=max_concurrent_computation_calls,
        startup_timeout=startup_timeout,
        private_network=private_network,
    )
    try:
        return _WorkerExecutionContext(data_backend, worker, default_num_clients, data_executor)
    except BaseException:
        worker.stop()
        raise
