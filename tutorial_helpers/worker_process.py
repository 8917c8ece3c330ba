"""TFF workers: a `worker_binary` process whose whole life the kit controls, or one elsewhere.

`WorkerProcess` starts and stops a local worker; `RemoteWorker` connects to
one that runs on another host. Both are a `Worker`, what the kit's contexts
(`tutorial_helpers.runtime.contexts`) need of one.

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
import dataclasses
import os
import time
from typing import TYPE_CHECKING, Protocol

import grpc
import portpicker
import tensorflow_federated as tff

from tutorial_helpers.runtime.processes import (
    ManagedProcess,
    network_addresses,
    private_network_status,
    uncontained_policy,
    warn_uncontained,
)

if TYPE_CHECKING:  # For the annotation only: the gatekeeper module is imported when one is used.
    from tutorial_helpers.gatekeeper import Gatekeeper

# The port a contained worker listens on: any will do, the namespace is its own.
_CONTAINED_PORT = 8000
# The port its gatekeeper listens on, in the same namespace, when it has one.
_GATEKEEPER_PORT = 8001

_GRPC_MAX_MESSAGE_BYTES = 2 * 1000 * 1000 * 1000
_GRPC_OPTIONS = [
    ("grpc.max_message_length", _GRPC_MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", _GRPC_MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _GRPC_MAX_MESSAGE_BYTES),
]


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
        _ping(worker.channel, timeout, getattr(worker, "audit", None), wait_for_ready=True)
        return
    # A new channel connects at once; the worker's own may wait out gRPC's backoff after failures.
    channel = worker.new_channel()
    try:
        _ping(channel, timeout, worker.audit, wait_for_ready=True)
    finally:
        channel.close()


def _ping(channel: grpc.Channel, timeout: float, audit: ChannelAudit | None = None,
          wait_for_ready: bool = False) -> None:
    from tensorflow_federated.proto.v0 import computation_pb2, executor_pb2, executor_pb2_grpc

    stub = executor_pb2_grpc.ExecutorGroupStub(channel)

    def call(method: str, name: str, request):
        if audit is not None:
            audit.record("sent", name, request)
        response = getattr(stub, method)(request, timeout=timeout, wait_for_ready=wait_for_ready)
        if audit is not None:
            audit.record("received", name, response)
        return response

    clients = executor_pb2.Cardinality(placement=computation_pb2.Placement(uri=tff.CLIENTS.uri), cardinality=1)
    executor = call("GetExecutor", "get_executor", executor_pb2.GetExecutorRequest(cardinalities=[clients]))
    call("DisposeExecutor", "dispose_executor", executor_pb2.DisposeExecutorRequest(executor=executor.executor))


def worker_binary_path() -> str:
    """Returns the path of the `worker_binary` inside the installed TFF wheel."""
    import tensorflow_federated as tff

    path = os.path.join(os.path.dirname(tff.__file__), "data", "worker_binary")
    if not os.path.isfile(path):
        raise RuntimeError(
            f"TFF's C++ worker was not found at {path}. It ships inside the "
            "tensorflow-federated wheel (Linux x86-64 only for TFF 0.87); reinstall the kit's "
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


@dataclasses.dataclass
class ChannelAudit:
    """Every gRPC message between the controller and one worker: bytes each way, and what it carries.

    Each message is searched, in both directions, for each of `canaries`
    (byte strings that mark a site's records, `sites.write_site`) and each of
    `probes` (short runs of a site's raw example bytes, `sites.example_probes`,
    which find examples shipped without their canary, as preprocessed tensors
    for instance). A hit is recorded in `found` as (direction, method, mark).
    `bytes_sent` and `bytes_received` are the serialized sizes of the
    requests and answers, `calls` the number of requests.
    """

    canaries: tuple[bytes, ...] = ()
    probes: tuple[bytes, ...] = ()
    bytes_sent: int = 0
    bytes_received: int = 0
    calls: int = 0
    found: list[tuple[str, str, bytes]] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        marks = (*self.canaries, *self.probes)
        if any(len(mark) < 8 for mark in marks):
            raise ValueError("Every canary and probe must be at least 8 bytes long: a shorter one would be "
                             "found by chance in the model's own numbers.")
        self._canaries = frozenset(self.canaries)

    def record(self, direction: str, method: str, message) -> None:
        data = message.SerializeToString()
        if direction == "sent":
            self.calls += 1
            self.bytes_sent += len(data)
        else:
            self.bytes_received += len(data)
        self.found += [(direction, method, mark) for mark in (*self.canaries, *self.probes) if mark in data]

    @property
    def canary_hits(self) -> int:
        """Messages (counted once per canary found in them) that carried a canary."""
        return sum(1 for _, _, mark in self.found if mark in self._canaries)

    @property
    def example_hits(self) -> int:
        """Messages (counted once per probe found in them) that carried raw example bytes."""
        return len(self.found) - self.canary_hits


class _CountingStub:
    """TFF's gRPC stub, counting the bytes of client-placed values sent to the worker.

    With a `ChannelAudit`, every call's request and answer are also recorded there.
    """

    def __init__(self, stub, audit: ChannelAudit | None = None):
        self._stub = stub
        self.audit = audit
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


class Worker(Protocol):
    """What the kit's contexts need of a TFF worker, local (`WorkerProcess`) or remote (`RemoteWorker`)."""

    address: str
    stub: _CountingStub  # TFF's gRPC stub, counting the client-placed bytes sent.
    channel: grpc.Channel  # The channel under `stub`, without its deadline.

    def check_alive(self) -> None:
        """Returns if the worker can take calls; raises an error that says why not otherwise."""

    @property
    def client_value_bytes(self) -> int:
        """Bytes of CLIENTS-placed values sent to this worker so far."""

    def stop(self) -> None:
        """Stops the worker if the kit started it; disconnects from it either way."""


def _credentials(user: str, private_network: bool | None) -> tuple[int, int]:
    """(uid, gid) of the account `user`, checked to be usable for a worker."""
    import pwd

    if os.geteuid() != 0:
        raise PermissionError(f"user={user!r}: only root can start a worker as another user. "
                              "Leave user=None to run it as yourself.")
    if private_network is False:
        raise ValueError(f"user={user!r} needs a contained worker: pass private_network=None or True.")
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        raise LookupError(f"user={user!r}: no such user on this machine. Create it first "
                          f"(useradd --system {user}).") from None
    if account.pw_uid == 0:
        raise ValueError(f"user={user!r} is root: a site's worker must run as a user of its own.")
    return account.pw_uid, account.pw_gid


class _Connected:
    """What a `Worker` offers through its channel and stub (set by the subclass)."""

    _channel: grpc.Channel
    stub: _CountingStub

    @property
    def channel(self) -> grpc.Channel:
        return self._channel

    @property
    def audit(self) -> ChannelAudit | None:
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
        otherwise refused with a RuntimeError that says what to do.
      cwd: the worker's working directory, against which relative paths in
        the computations it runs resolve (a site's data root,
        `tutorial_helpers.sites`); by default this process's.
      audit: a `ChannelAudit` that records every message to and from the
        worker (its bytes, and the canaries it holds); by default none.
      call_timeout: seconds each call to the worker may take (a round's
        `compute` included) before it fails with DEADLINE_EXCEEDED; None
        (the default) for no limit.
      user: the name of a user account to run the worker as (a site's own
        user, owner of its data root `cwd`); root only, and the worker must
        be contained. By default the worker runs as this process's user.
      gatekeeper: a `tutorial_helpers.gatekeeper.Gatekeeper` to put in front
        of the worker, in its private network: the site's approval list, its
        limit on answers, its audit log. The worker must be contained. With
        `user`, the gatekeeper runs as this process's user and the worker as
        `user`, so the worker cannot change the gatekeeper's files.
      tls: with a gatekeeper that speaks mutual TLS (`Gatekeeper(tls=...)`),
        the controller's folder from `python -m tutorial_helpers.tls make`:
        its certificate, and the authority the site's must come from.
    """

    def __init__(self, *, max_concurrent_computation_calls: int = -1, startup_timeout: float = 60.0,
                 private_network: bool | None = None, cwd: str | os.PathLike | None = None,
                 audit: ChannelAudit | None = None, user: str | None = None, gatekeeper: Gatekeeper | None = None,
                 call_timeout: float | None = None, tls: str | os.PathLike | None = None):
        _check_timeout(call_timeout)
        if (tls is None) != (gatekeeper is None or gatekeeper.tls is None):
            raise ValueError("tls= (the controller's certificate folder) goes with a gatekeeper that speaks TLS "
                             "(Gatekeeper(tls=...)): give both or neither.")
        credentials = None if user is None else _credentials(user, private_network)
        if gatekeeper is not None and private_network is False:
            raise ValueError(f"A gatekeeper (site {gatekeeper.site!r}) needs a contained worker: pass "
                             "private_network=None or True.")
        possible, reason = private_network_status() if private_network is not False else (False, "")
        if gatekeeper is not None and not possible:
            raise RuntimeError(f"A gatekeeper (site {gatekeeper.site!r}) needs a private network for the worker, "
                               f"which this system does not allow: {reason}. Without one, the worker's own port "
                               "would be open beside the gatekeeper's. Start the site without a gatekeeper.")
        if credentials is not None and not possible:
            raise RuntimeError(f"user={user!r} needs a private network for the worker, which this system does "
                               f"not allow: {reason}. Run the sites as this process's user (user=None).")
        if private_network and not possible:
            raise RuntimeError(
                f"private_network=True, but this system does not allow a private network "
                f"namespace: {reason}. Pass private_network=None to run the worker uncontained."
            )
        if private_network is None and not possible:
            allowed, message = uncontained_policy(
                reason, in_container="KIT_CONTAINER" in os.environ, addresses=network_addresses())
            if not allowed:
                raise RuntimeError(message)
            warn_uncontained(message)
        self.contained = possible
        self.port = _CONTAINED_PORT if possible else portpicker.pick_unused_port()
        args = [
            worker_binary_path(),
            f"--port={self.port}",
            f"--max_concurrent_computation_calls={max_concurrent_computation_calls}",
        ]
        self.gatekeeper = gatekeeper
        self.call_timeout = call_timeout
        self.tls = tls
        inner_port = self.port
        if gatekeeper is not None:
            args = gatekeeper.command(args, worker_port=self.port, port=_GATEKEEPER_PORT, worker_user=credentials)
            inner_port = _GATEKEEPER_PORT
        super().__init__(args, description="TFF worker" if gatekeeper is None else f"site {gatekeeper.site!r}",
                         private_network=possible, inner_port=inner_port, cwd=cwd,
                         user=None if gatekeeper is not None else credentials,
                         netns_only=gatekeeper is not None and credentials is not None)
        self.user = user
        self.address = f"unix:{self.socket_path}" if possible else f"127.0.0.1:{self.port}"
        try:
            self._wait_until_ready(startup_timeout)
        except BaseException:
            self.stop()
            raise
        self.stub = _CountingStub(tff.framework.RemoteExecutorGrpcStub(_with_deadline(self._channel, call_timeout)),
                                  audit)

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        # The launcher makes the socket once the worker listens; connecting
        # earlier would put gRPC into its reconnect backoff (1 s and more).
        if self.contained:
            self._wait(lambda: os.path.exists(self.socket_path), timeout, "start", interval=0.02)
        if self.tls is not None:  # The gatekeeper listens once the socket is there; one call says if TLS works.
            from tutorial_helpers.tls import Identity

            self._channel = Identity(self.tls).secure_channel(self.address, self.gatekeeper.site, _GRPC_OPTIONS)
            try:
                _ping(self._channel, max(1.0, deadline - time.monotonic()))
                return
            except grpc.RpcError as e:
                raise ConnectionError(f"{self} was not reached over TLS: {e.details()}") from None
        self._channel = grpc.insecure_channel(self.address, _GRPC_OPTIONS)
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


class RemoteWorker(_Connected):
    """A TFF worker started elsewhere: `worker_binary --port=N`, or a site (`tutorial_helpers.site_server`).

    Args:
      address: host:port (or unix:PATH) where it listens.
      connect_timeout: seconds to wait for it to answer.
      site, tls: a site's name and the controller's folder from `python -m
        tutorial_helpers.tls make`: the connection is then mutual TLS, and
        only a certificate from the same authority that names `site` is
        accepted (so another site, or anybody else at that address, is not).
      call_timeout: seconds each call may take (a site's whole part of a
        round is one call) before it fails, so that a machine that went
        silent does not hold the caller forever; None for no limit.
      audit: a `ChannelAudit` that records every message to and from it.
    """

    def __init__(self, address: str, connect_timeout: float = 10.0, *, site: str | None = None,
                 tls: str | os.PathLike | None = None, call_timeout: float | None = 300.0,
                 audit: ChannelAudit | None = None):
        _check_timeout(call_timeout)
        if tls is not None and site is None:
            raise ValueError("tls= needs site=: the name the site's certificate must carry.")
        self.address = address
        self.site = site
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self.tls = tls
        self._channel = self.new_channel()
        self.stub = _CountingStub(tff.framework.RemoteExecutorGrpcStub(_with_deadline(self._channel, call_timeout)),
                                  audit)
        try:
            self.check_alive()
        except BaseException:
            _close_channel(self._channel)
            raise

    def new_channel(self) -> grpc.Channel:
        """A channel to the worker, with its TLS if any (the caller closes it)."""
        # A site that comes back is found within 2 s (gRPC's own backoff grows to 2 minutes).
        options = [*_GRPC_OPTIONS, ("grpc.max_reconnect_backoff_ms", 2000)]
        if self.tls is None:
            return grpc.insecure_channel(self.address, options)
        from tutorial_helpers.tls import Identity

        return Identity(self.tls).secure_channel(self.address, self.site, options)

    def check_alive(self) -> None:
        ready = grpc.channel_ready_future(self._channel)
        try:
            ready.result(timeout=self.connect_timeout)
        except grpc.FutureTimeoutError:
            ready.cancel()
            try:  # A call says why (refused, a certificate not accepted); waiting does not.
                _ping(self._channel, 1.0)
                why = ""
            except grpc.RpcError as e:
                why = f": {e.details()}"
            what = "No TFF worker answers" if self.site is None else f"Site {self.site!r} does not answer"
            raise ConnectionError(
                f"{what} at {self.address} (waited {self.connect_timeout:g} s){why}. Start one there "
                "(`python -m tutorial_helpers.site_server`, or `worker_binary --port=<port>`), reachable from "
                "this machine" + ("" if self.tls is None else ", with a certificate from the same workshop CA")
                + "."
            ) from None

    def stop(self) -> None:
        """Disconnects; the remote worker keeps running (it is not ours to stop)."""
        _close_channel(self._channel)

    def __str__(self) -> str:
        return (f"remote TFF worker at {self.address}" if self.site is None else
                f"site {self.site!r} at {self.address}" + (", mutual TLS" if self.tls else ""))
