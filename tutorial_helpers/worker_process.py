"""A TFF `worker_binary` process whose whole life the kit controls.

TFF's C++ runtime is a gRPC service, `worker_binary`, shipped inside the
`tensorflow-federated` wheel. The same binary is TFF's distributed engine: a
controller talks to one or many of them, on this machine or on others.

TFF's own local context starts the worker lazily, lets it share the parent's
stdout and stops it only when Python garbage-collects the context. A pipe
reader (CI, nbval, `python script.py | tail`) can then wait forever on a
worker nobody stops. `WorkerProcess` instead:

* starts the worker eagerly, on a free port of 127.0.0.1, with its output in
  a log file (shown in errors when the worker fails);
* waits until it answers, for a bounded time, and says why if it does not;
* stops it on `stop()`, on leaving a `with` block, at interpreter exit and,
  on Linux, when the parent process dies even by SIGKILL (`setpriv
  --pdeathsig`), so a killed Jupyter kernel leaves no worker behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import weakref

import grpc
import portpicker

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


def _stop(process: subprocess.Popen, log_file) -> None:
    """Stops `process` (SIGTERM, then SIGKILL after 5 s) and closes its log."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log_file.close()


class WorkerProcess:
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
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed by _stop)
            mode="w+b", prefix=f"tff_worker_{self.port}_", suffix=".log"
        )
        args = [
            worker_binary_path(),
            f"--port={self.port}",
            f"--max_concurrent_computation_calls={max_concurrent_computation_calls}",
        ]
        setpriv = shutil.which("setpriv")
        if setpriv:  # util-linux: the kernel sends SIGTERM if we die first.
            args = [setpriv, "--pdeathsig", "TERM", "--", *args]
        self._process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        self._finalizer = weakref.finalize(self, _stop, self._process, self._log)
        self._channel = grpc.insecure_channel(self.address, _GRPC_OPTIONS)
        try:
            self._wait_until_ready(startup_timeout)
        except BaseException:
            self.stop()
            raise
        from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub

        self.stub = remote_executor_grpc_stub.RemoteExecutorGrpcStub(self._channel)

    @property
    def pid(self) -> int:
        return self._process.pid

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
                        f"TFF worker (pid {self.pid}) did not answer on {self.address} "
                        f"within {timeout:.0f} s. Its log ends with:\n{self.log_tail()}"
                    ) from None

    def log_tail(self, lines: int = 15) -> str:
        """Returns the last `lines` lines the worker wrote."""
        if self._log.closed:
            return "(log closed)"
        self._log.flush()
        with open(self._log.name, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:]) or "(empty)"

    def is_running(self) -> bool:
        return self._process.poll() is None

    def check_alive(self) -> None:
        """Raises RuntimeError, with the worker's last log lines, if it has exited."""
        code = self._process.poll()
        if code is not None:
            raise RuntimeError(
                f"TFF worker (pid {self.pid}, {self.address}) is not running: it exited "
                f"with code {code}. Create a new execution context to start another. "
                f"Its log ends with:\n{self.log_tail()}"
            )

    def stop(self) -> None:
        """Stops the worker and waits for it to exit. Safe to call twice."""
        if self._finalizer.alive:
            _close_channel(self._channel)
        self._finalizer()

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"WorkerProcess(pid={self.pid}, address={self.address!r}, {state})"
