"""What the kit's execution contexts add to TFF's: closing, `with` blocks, and interrupts.

TFF's contexts (`tff.framework.SyncExecutionContext`,
`MergeableCompExecutionContext`) run computations; the kit's own contexts
(`remote_data.create_execution_context`,
`multi_worker.create_multi_worker_context`) are TFF's with `ClosableContext`
mixed in, which stops their workers on `close()` or at the end of a `with`
block, refuses calls after that with a clear error, and lets the next call
run at once after Jupyter's "interrupt" instead of waiting for the
interrupted one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import tensorflow_federated as tff

from tutorial_helpers.runtime.tff_private import AsyncThreadRunner, Executor
from tutorial_helpers.runtime.workers import Worker

__all__ = ["CONTEXT_ARGS", "ClosableContext", "executor_factory"]


def executor_factory(
    worker: Worker,
    default_num_clients: int,
    wrap: Callable[[Executor], Executor] | None = None,
) -> tff.framework.ResourceManagingExecutorFactory:
    """TFF's factory of executors on `worker`, each passed through `wrap` if given.

    `wrap` puts an executor in front of TFF's `RemoteExecutor`: the
    `DataExecutor` of `tutorial_helpers.remote_data`, for instance.
    """

    def executor_stack(cardinalities):
        # A dead worker is final: without this check TFF would retry the
        # call forever, since it treats an unreachable worker as transient.
        worker.check_alive()
        cardinalities.setdefault(tff.CLIENTS, default_num_clients)
        executor = tff.framework.RemoteExecutor(worker.stub)
        executor.set_cardinalities(cardinalities)
        return executor if wrap is None else wrap(executor)

    return tff.framework.ResourceManagingExecutorFactory(executor_stack)


# What every kit context passes to TFF's contexts: TFF's native compiler and TensorFlow conversions.
CONTEXT_ARGS = dict(
    compiler_fn=tff.backends.native.desugar_and_transform_to_native,
    transform_args=tff.tensorflow.transform_args,
    transform_result=tff.tensorflow.transform_result,
)


_abandoned_runners: list = []


async def _cancel_the_rest_and_stop() -> None:
    """Cancels every other task of the running loop, waits for them, stops the loop."""
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    asyncio.get_running_loop().stop()


class ClosableContext:
    """What the kit's contexts add to TFF's: `close()`, and use in a `with` block.

    Subclasses give `workers` (what `close()` stops), an attribute or a property.
    """

    workers: list
    _closed = False
    _created_by = "create_execution_context"

    @property
    def closed(self) -> bool:
        return self._closed

    def invoke(self, comp, arg):
        if self._closed:
            stopped = "worker" if len(self.workers) == 1 else "workers"
            raise RuntimeError(
                f"This execution context is closed and its TFF {stopped} stopped. Create a new "
                f"one with {self._created_by}(...) and make it the default context again."
            )
        try:
            return super().invoke(comp, arg)
        except KeyboardInterrupt:  # Jupyter's "interrupt", or Ctrl-C.
            self._abandon_interrupted_call()
            raise

    def _abandon_interrupted_call(self) -> None:
        """Lets the next call run at once, on a new event loop.

        TFF's contexts run each call on an event loop in a thread of their
        own, and TFF's `RemoteExecutor` calls the worker with blocking gRPC
        calls, so an interrupted call keeps that loop busy until the worker
        answers. The next call gets a fresh loop instead; the old one cancels
        what is left of the interrupted call as soon as it is free, then ends.
        """
        old = self._async_runner  # TFF's sync contexts have no public way to replace it.
        self._async_runner = AsyncThreadRunner()
        asyncio.run_coroutine_threadsafe(_cancel_the_rest_and_stop(), old._event_loop)
        # Keep it referenced until its thread ends: its __del__ joins that thread.
        _abandoned_runners[:] = [r for r in _abandoned_runners if r._thread.is_alive()] + [old]

    def close(self) -> None:
        """Stops the workers. Further computations in this context raise RuntimeError."""
        if self._closed:
            return
        self._closed = True
        try:
            if hasattr(self, "_installed"):
                self._installed.close()
        finally:
            for worker in self.workers:
                worker.stop()

    def __enter__(self):
        """Makes this the current TFF context until the `with` block ends."""
        self._installed = contextlib.ExitStack()
        self._installed.enter_context(tff.framework.get_context_stack().install(self))
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
