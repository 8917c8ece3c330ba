"""What the kit's contexts need of a TFF worker, and the facts about `worker_binary` that everything shares.

`Worker` is the contract between the contexts (`runtime.contexts`, the
kit's `remote_data`, `multi_worker` and `sites`) and a worker: one the kit
started (`tutorial_helpers.worker_process.WorkerProcess`), one elsewhere
(`RemoteWorker`), or a site's (`tutorial_helpers.sites.worker.SiteWorker`).
This module imports neither TensorFlow nor TFF, so a site's gatekeeper and
`site_server` can use it.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Protocol

import grpc

__all__ = ["CONTAINED_PORT", "GRPC_OPTIONS", "MessageRecorder", "Worker", "worker_binary_path"]

# The port a contained worker listens on, inside its own network namespace: any will do.
CONTAINED_PORT = 8000

_MAX_MESSAGE_BYTES = 2 * 1000 * 1000 * 1000
# Every gRPC channel and server of the kit: TFF's values (a model, a dataset) can be large.
GRPC_OPTIONS = [
    ("grpc.max_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
]


class MessageRecorder(Protocol):
    """What watches a worker's traffic: told every request before it is sent, and every answer."""

    def record(self, direction: str, method: str, message: Any) -> None:
        """`direction` is "sent" or "received"; `message` a protocol buffer."""


class Worker(Protocol):
    """What the kit's contexts need of a TFF worker, wherever it runs."""

    address: str  # Where it is reached: host:port, or unix:PATH.

    @property
    def stub(self) -> Any:
        """What `tff.framework.RemoteExecutor` calls: TFF's executor stub for this worker."""

    @property
    def channel(self) -> grpc.Channel:
        """The gRPC channel to the worker (without the stub's deadline)."""

    @property
    def client_value_bytes(self) -> int:
        """Bytes of CLIENTS-placed values sent to this worker so far."""

    def check_alive(self) -> None:
        """Returns if the worker can take calls; raises an error that says why not otherwise."""

    def stop(self) -> None:
        """Stops the worker if the kit started it; disconnects from it either way."""


def worker_binary_path() -> str:
    """The path of TFF's `worker_binary`, inside the installed tensorflow-federated wheel.

    Found without importing TensorFlow Federated. RuntimeError if it is not there.
    """
    spec = importlib.util.find_spec("tensorflow_federated")
    path = None if spec is None or not spec.submodule_search_locations else os.path.join(
        spec.submodule_search_locations[0], "data", "worker_binary")
    if path is None or not os.path.isfile(path):
        raise RuntimeError(
            f"TFF's C++ worker was not found{'' if path is None else f' at {path}'}. It ships inside the "
            "tensorflow-federated wheel (Linux x86-64 only for TFF 0.87); reinstall the kit's "
            "environment (see README.md).")
    return path
