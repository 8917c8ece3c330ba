"""TFF workers: a `worker_binary` process whose whole life the kit controls, or one elsewhere.

`WorkerProcess` starts and stops a local worker; `RemoteWorker` connects to
one that runs on another host. Both are a `Worker` (`runtime.workers`), what
the kit's contexts need of one. This module knows nothing of sites: a site's
worker, behind its gatekeeper, is `tutorial_helpers.sites.worker.SiteWorker`.

TFF's C++ runtime is a gRPC service, `worker_binary`, shipped inside the
`tensorflow-federated` wheel. The same binary is TFF's distributed engine: a
controller talks to one or many of them, on this machine or on others.

TFF's own local context starts the worker lazily, lets it share the parent's
stdout and stops it only when Python garbage-collects the context. A pipe
reader (CI, nbval, `python script.py | tail`) can then wait forever on a
worker nobody stops. `WorkerProcess` instead starts it eagerly, waits a
bounded time until it answers, and stops it as every `ManagedProcess` is
stopped (see `tutorial_helpers.runtime.processes`).

What a worker exposes: `worker_binary` listens on *every* network interface
(it binds ``[::]:PORT``; it has no flag for the address) and has no
authentication: whoever reaches the port can make it run any TensorFlow
graph, file reads and writes included, as the user who started it. So, where
Linux allows it, `WorkerProcess` contains it in a network namespace of its
own whose only interface is a private loopback, and the controller reaches
it through a Unix socket in a directory only the user can open (`address`
is then ``unix:/tmp/tff-kit-.../socket``). Where that is not allowed (some
containers forbid namespaces), the kit warns once and the worker listens as
TFF's own do; `address` is then ``127.0.0.1:PORT``, but other machines can
reach that port too.
"""

from __future__ import annotations

import collections
import os
import time

import grpc
import portpicker
import tensorflow_federated as tff

from tutorial_helpers.runtime.accounts import resolve_user
from tutorial_helpers.runtime.processes import ManagedProcess, decide_containment
from tutorial_helpers.runtime.workers import (
    CONTAINED_PORT,
    GRPC_OPTIONS,
    MessageRecorder,
    Worker,
    worker_binary_path,
)

__all__ = ["CountingStub", "RemoteWorker", "WorkerProcess", "ping", "ping_channel"]


class _CallDetails(collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
        grpc.ClientCallDetails):
    pass


# Calls that do no computing: a worker that answers answers them at once.
_QUICK_CALLS = ("/GetExecutor", "/Dispose", "/DisposeExecutor")
_QUICK_CALL_SECONDS = 5.0


class _Deadline(grpc.UnaryUnaryClientInterceptor):
    """Gives every call on a channel a deadline: a worker that stops answering fails the call.

    TFF's stub has no deadline of its own, so a worker that hangs would
    hang its caller too. The call then fails with DEADLINE_EXCEEDED. Calls
    that compute nothing (getting and disposing of executors and values) get
    at most `_QUICK_CALL_SECONDS`: after a computation timed out, TFF
    disposes of its executor, and that must not wait as long again.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds

    def intercept_unary_unary(self, continuation, details, request):
        if details.timeout is None:
            seconds = (min(self.seconds, _QUICK_CALL_SECONDS) if details.method.endswith(_QUICK_CALLS)
                       else self.seconds)
            details = _CallDetails(details.method, seconds, details.metadata, details.credentials,
                                   details.wait_for_ready, details.compression)
        return continuation(details, request)


def _check_timeout(call_timeout: float | None) -> None:
    if call_timeout is not None and not call_timeout > 0:
        raise ValueError(f"call_timeout must be a number of seconds above 0, or None (no limit), got {call_timeout}.")


def _with_deadline(channel: grpc.Channel, call_timeout: float | None) -> grpc.Channel:
    return channel if call_timeout is None else grpc.intercept_channel(channel, _Deadline(call_timeout))


def ping(worker: Worker, timeout: float = 2.0) -> None:
    """Asks `worker` for an executor and gives it back; raises if it does not answer within `timeout` s.

    What a context uses to see whether a worker that failed earlier (it
    died, or stopped answering) is back. Recorded in the worker's audit if
    it has one, and in a site's audit log if it has a gatekeeper. A remote
    worker has `timeout` seconds to connect and answer, not its
    `connect_timeout`.
    """
    if isinstance(worker, WorkerProcess):
        worker.check_alive()  # A process that ended says why; a call would only say it was refused.
    if not isinstance(worker, RemoteWorker):
        ping_channel(worker.channel, timeout, getattr(worker, "audit", None), wait_for_ready=True)
        return
    # A new channel connects at once; the worker's own may wait out gRPC's backoff after failures.
    channel = worker.new_channel()
    try:
        ping_channel(channel, timeout, worker.audit, wait_for_ready=True)
    finally:
        channel.close()


def ping_channel(channel: grpc.Channel, timeout: float, recorder: MessageRecorder | None = None,
                 wait_for_ready: bool = False) -> None:
    """`ping` on a channel: GetExecutor, then DisposeExecutor, each within `timeout` s; raises grpc.RpcError."""
    from tensorflow_federated.proto.v0 import computation_pb2, executor_pb2, executor_pb2_grpc

    stub = executor_pb2_grpc.ExecutorGroupStub(channel)

    def call(method: str, name: str, request):
        if recorder is not None:
            recorder.record("sent", name, request)
        response = getattr(stub, method)(request, timeout=timeout, wait_for_ready=wait_for_ready)
        if recorder is not None:
            recorder.record("received", name, response)
        return response

    clients = executor_pb2.Cardinality(placement=computation_pb2.Placement(uri=tff.CLIENTS.uri), cardinality=1)
    executor = call("GetExecutor", "get_executor", executor_pb2.GetExecutorRequest(cardinalities=[clients]))
    call("DisposeExecutor", "dispose_executor", executor_pb2.DisposeExecutorRequest(executor=executor.executor))


def close_channel(channel: grpc.Channel) -> None:
    """Closes `channel` after its connectivity-polling thread has stopped.

    Closing while grpc's poller is inside a 0.2 s watch makes that thread
    raise "Channel closed!"; without subscribers it exits on its next turn.
    """
    state = getattr(channel, "_connectivity_state", None)  # grpc keeps its poller's state here; no public API.
    if state is not None:
        with state.lock:
            callbacks = [callback for callback, _ in state.callbacks_and_connectivities]
        for callback in callbacks:
            channel.unsubscribe(callback)
        deadline = time.monotonic() + 1.0
        while state.polling and time.monotonic() < deadline:
            time.sleep(0.02)
    channel.close()


class CountingStub:
    """TFF's gRPC stub, counting the bytes of client-placed values sent to the worker.

    With a `recorder` (a site's `ChannelAudit`, for instance), every call's
    request and answer are also recorded there.
    """

    def __init__(self, stub, recorder: MessageRecorder | None = None):
        self._stub = stub
        self.audit = recorder
        self.client_value_bytes = 0

    def _call(self, method: str, request):
        if self.audit is not None:
            self.audit.record("sent", method, request)
        response = getattr(self._stub, method)(request)
        if self.audit is not None:
            self.audit.record("received", method, response)
        return response

    def create_value(self, request):
        value = request.value
        if value.WhichOneof("value") == "federated" and value.federated.type.placement.value.uri == "clients":
            self.client_value_bytes += value.ByteSize()
        return self._call("create_value", request)

    def __getattr__(self, name):
        attribute = getattr(self._stub, name)
        if self.audit is None or name.startswith("_") or not callable(attribute):
            return attribute
        return lambda request: self._call(name, request)


class _Connected:
    """What a `Worker` offers through its channel and stub (set by the subclass)."""

    _channel: grpc.Channel
    stub: CountingStub

    @property
    def channel(self) -> grpc.Channel:
        return self._channel

    @property
    def audit(self) -> MessageRecorder | None:
        return self.stub.audit

    @property
    def client_value_bytes(self) -> int:
        """Bytes of CLIENTS-placed values (client data or its references) sent so far."""
        return self.stub.client_value_bytes


class WorkerProcess(_Connected, ManagedProcess):
    """One running `worker_binary`, reachable through `stub`.

    Use it as a context manager, or call `stop()`; it is also stopped at
    interpreter exit and when this process dies.

    Args:
      max_concurrent_computation_calls: passed to the worker; nonpositive
        means no limit.
      startup_timeout: seconds to wait for the worker to answer.
      private_network: True to require containment (RuntimeError where the
        system forbids it), False to listen on every interface as TFF's own
        workers do, None (the default) to contain it where possible; where
        not, it runs uncontained (with a warning, once) only inside the kit's
        container or on a machine with no address but loopback, and is
        otherwise refused with a RuntimeError that says what to do
        (`runtime.processes.decide_containment`).
      cwd: the worker's working directory, against which relative paths in
        the computations it runs resolve (a site's data root,
        `tutorial_helpers.sites`); by default this process's.
      audit: what records every message to and from the worker (a site's
        `tutorial_helpers.sites.audit.ChannelAudit`); by default nothing.
      call_timeout: seconds each call to the worker may take (a round's
        `compute` included) before it fails with DEADLINE_EXCEEDED; None
        (the default) for no limit.
      user: the name of a user account to run the worker as (a site's own
        user, owner of its data root `cwd`); root only, and the worker must
        be contained. By default the worker runs as this process's user.

    A site's worker behind its gatekeeper is a `sites.worker.SiteWorker`.
    """

    description = "TFF worker"

    def __init__(self, *, max_concurrent_computation_calls: int = -1, startup_timeout: float = 60.0,
                 private_network: bool | None = None, cwd: str | os.PathLike | None = None,
                 audit: MessageRecorder | None = None, user: str | None = None,
                 call_timeout: float | None = None):
        _check_timeout(call_timeout)
        self._check_arguments(private_network)
        if user is not None and private_network is False:
            raise ValueError(f"user={user!r} needs a contained worker: pass private_network=None or True.")
        credentials = None if user is None else resolve_user(user)
        self.contained = decide_containment(private_network, **self._containment_needs(user))
        self.port = CONTAINED_PORT if self.contained else portpicker.pick_unused_port()
        self.call_timeout = call_timeout
        self.user = user
        args = [worker_binary_path(), f"--port={self.port}",
                f"--max_concurrent_computation_calls={max_concurrent_computation_calls}"]
        command, inner_port, run_as, netns_only = self._wrap(args, credentials)
        super().__init__(command, description=self.description, private_network=self.contained,
                         inner_port=inner_port, cwd=cwd, user=run_as, netns_only=netns_only)
        self.address = f"unix:{self.socket_path}" if self.contained else f"127.0.0.1:{self.port}"
        try:
            self._channel = self._connect(startup_timeout)
        except BaseException:
            self.stop()
            raise
        self.stub = CountingStub(tff.framework.RemoteExecutorGrpcStub(_with_deadline(self._channel, call_timeout)),
                                 audit)

    # What a subclass (a site's worker) changes: what it requires, what runs, how it is reached.

    def _check_arguments(self, private_network: bool | None) -> None:
        """Raises for arguments that do not go together; called first, before anything starts."""

    def _containment_needs(self, user: str | None) -> dict:
        """`decide_containment`'s `needed_by` and `way_out`, if something here needs a private network."""
        if user is None:
            return {}
        return {"needed_by": f"user={user!r}", "way_out": "Run the sites as this process's user (user=None)."}

    def _wrap(self, args: list[str], credentials: tuple[int, int] | None):
        """(command, the port it listens on, the (uid, gid) the launcher runs it as, netns_only)."""
        return args, self.port, credentials, False

    def _connect(self, timeout: float) -> grpc.Channel:
        """A channel to the worker once it answers; raises (with its log) if it does not within `timeout` s."""
        deadline = time.monotonic() + timeout
        # The launcher makes the socket once the worker listens; connecting
        # earlier would put gRPC into its reconnect backoff (1 s and more).
        if self.contained:
            self.wait_until(lambda: os.path.exists(self.socket_path), timeout, "start", interval=0.02)
        channel = grpc.insecure_channel(self.address, GRPC_OPTIONS)
        ready = grpc.channel_ready_future(channel)
        while True:
            try:
                self.check_alive()
                ready.result(timeout=0.5)
                return channel
            except grpc.FutureTimeoutError:
                if time.monotonic() > deadline:
                    ready.cancel()
                    channel.close()
                    raise TimeoutError(
                        f"{self} did not answer on {self.address} within {timeout:.0f} s. "
                        f"Its log ends with:\n{self.log_tail()}"
                    ) from None
            except BaseException:
                channel.close()
                raise

    def stop(self) -> None:
        try:
            if self._finalizer.alive and hasattr(self, "_channel"):
                close_channel(self._channel)
        finally:
            super().stop()

    def __str__(self) -> str:
        return f"TFF worker (pid {self.pid}, {self.address})"

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"{type(self).__name__}(pid={self.pid}, address={self.address!r}, {state})"


class RemoteWorker(_Connected):
    """A TFF worker started elsewhere, `worker_binary --port=N`; a site elsewhere is a `sites.worker.RemoteSite`.

    Args:
      address: host:port (or unix:PATH) where it listens.
      connect_timeout: seconds to wait for it to answer.
      call_timeout: seconds each call may take (a site's whole part of a
        round is one call) before it fails, so that a machine that went
        silent does not hold the caller forever; None for no limit.
      audit: what records every message to and from it (a `ChannelAudit`).
    """

    def __init__(self, address: str, connect_timeout: float = 10.0, *, call_timeout: float | None = 300.0,
                 audit: MessageRecorder | None = None):
        _check_timeout(call_timeout)
        self.address = address
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self._channel = self.new_channel()
        self.stub = CountingStub(tff.framework.RemoteExecutorGrpcStub(_with_deadline(self._channel, call_timeout)),
                                 audit)
        try:
            self.check_alive()
        except BaseException:
            close_channel(self._channel)
            raise

    def new_channel(self) -> grpc.Channel:
        """A new channel to the worker (the caller closes it)."""
        # A worker that comes back is found within 2 s (gRPC's own backoff grows to 2 minutes).
        return grpc.insecure_channel(self.address, [*GRPC_OPTIONS, ("grpc.max_reconnect_backoff_ms", 2000)])

    def _unreachable(self, why: str) -> ConnectionError:
        return ConnectionError(
            f"No TFF worker answers at {self.address} (waited {self.connect_timeout:g} s){why}. Start one there "
            "(`worker_binary --port=<port>`), reachable from this machine.")

    def check_alive(self) -> None:
        ready = grpc.channel_ready_future(self._channel)
        try:
            ready.result(timeout=self.connect_timeout)
        except grpc.FutureTimeoutError:
            ready.cancel()
            try:  # A call says why (refused, a certificate not accepted); waiting does not.
                ping_channel(self._channel, 1.0)
                why = ""
            except grpc.RpcError as e:
                why = f": {e.details()}"
            raise self._unreachable(why) from None

    def stop(self) -> None:
        """Disconnects; the remote worker keeps running (it is not ours to stop)."""
        close_channel(self._channel)

    def __str__(self) -> str:
        return f"remote TFF worker at {self.address}"
