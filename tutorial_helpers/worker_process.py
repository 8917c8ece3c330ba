"""A TFF `worker_binary` process whose whole life the kit controls.

TFF's C++ runtime is a gRPC service, `worker_binary`, shipped inside the
`tensorflow-federated` wheel. The same binary is TFF's distributed engine: a
controller talks to one or many of them, on this machine or on others.

TFF's own local context starts the worker lazily, lets it share the parent's
stdout and stops it only when Python garbage-collects the context. A pipe
reader (CI, nbval, `python script.py | tail`) can then wait forever on a
worker nobody stops. `WorkerProcess` instead starts it eagerly on a free port
of 127.0.0.1, waits a bounded time until it answers, and stops it as every
`ManagedProcess` is stopped (see `tutorial_helpers.processes`).
"""

from __future__ import annotations

import os
import time

import grpc
import portpicker

from tutorial_helpers.processes import ManagedProcess

_GRPC_MAX_MESSAGE_BYTES = 2 * 1000 * 1000 * 1000
_GRPC_OPTIONS = [
    ("grpc.max_message_length", _GRPC_MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", _GRPC_MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _GRPC_MAX_MESSAGE_BYTES),
]


def worker_binary_path() -> str:
    """Returns the path of the `worker_binary` inside the installed TFF wheel."""
    import tensorflow_federated as tff

    path = os.path.join(os.path.dirname(tff.__file__), "data", "worker_binary")
    if not os.path.isfile(path):
        raise RuntimeError(
            f"TFF's C++ worker was not found at {path}. It ships inside the "
            "tensorflow-federated wheel for Linux and macOS; reinstall the kit's "
            "environment (see README.md)."
        )
    return path


def _close_channel(channel: grpc.Channel) -> None:
    """Closes `channel` after its connectivity-polling thread has stopped.

    Closing while grpc's poller is inside a 0.2 s watch makes that thread
    raise "Channel closed!"; without subscribers it exits on its next turn.
    """
    state = getattr(channel, "_connectivity_state", None)
    if state is not None:
        with state.lock:
            callbacks = [callback for callback, _ in state.callbacks_and_connectivities]
        for callback in callbacks:
            channel.unsubscribe(callback)
        deadline = time.monotonic() + 1.0
        while state.polling and time.monotonic() < deadline:
            time.sleep(0.02)
    channel.close()


class _CountingStub:
    """TFF's gRPC stub, counting the bytes of client-placed values sent to the worker."""

    def __init__(self, stub):
        self._stub = stub
        self.client_value_bytes = 0

    def create_value(self, request):
        value = request.value
        if value.WhichOneof("value") == "federated" and value.federated.type.placement.value.uri == "clients":
            self.client_value_bytes += value.ByteSize()
        return self._stub.create_value(request)

    def __getattr__(self, name):
        return getattr(self._stub, name)


class WorkerProcess(ManagedProcess):
    """One running `worker_binary`, reachable through `stub`.

    Use it as a context manager, or call `stop()`; it is also stopped at
    interpreter exit and when this process dies.

    Args:
      max_concurrent_computation_calls: passed to the worker; nonpositive
        means no limit.
      startup_timeout: seconds to wait for the worker to answer.
    """

    def __init__(self, *, max_concurrent_computation_calls: int = -1, startup_timeout: float = 60.0):
        self.port = portpicker.pick_unused_port()
        self.address = f"127.0.0.1:{self.port}"
        super().__init__(
            [
                worker_binary_path(),
                f"--port={self.port}",
                f"--max_concurrent_computation_calls={max_concurrent_computation_calls}",
            ],
            description="TFF worker",
        )
        self._channel = grpc.insecure_channel(self.address, _GRPC_OPTIONS)
        try:
            self._wait_until_ready(startup_timeout)
        except BaseException:
            self.stop()
            raise
        from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub

        self.stub = _CountingStub(remote_executor_grpc_stub.RemoteExecutorGrpcStub(self._channel))

    @property
    def client_value_bytes(self) -> int:
        """Bytes of CLIENTS-placed values (client data or its references) sent so far."""
        return self.stub.client_value_bytes

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ready = grpc.channel_ready_future(self._channel)
        while True:
            try:
                self.check_alive()
                ready.result(timeout=0.5)
                return
            except grpc.FutureTimeoutError:
                if time.monotonic() > deadline:
                    ready.cancel()
                    raise TimeoutError(
                        f"{self} did not answer on {self.address} within {timeout:.0f} s. "
                        f"Its log ends with:\n{self.log_tail()}"
                    ) from None

    def stop(self) -> None:
        try:
            if self._finalizer.alive and hasattr(self, "_channel"):
                _close_channel(self._channel)
        finally:
            super().stop()

    def __str__(self) -> str:
        return f"TFF worker (pid {self.pid}, {self.address})"

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"WorkerProcess(pid={self.pid}, address={self.address!r}, {state})"
