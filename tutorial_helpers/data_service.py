"""A data service: each client's examples over HTTP, from a separate process.

This stands in for "the data lives somewhere else": a real HTTP server in its
own process, bound to 127.0.0.1, serving the training examples of the bundled
EMNIST sample, one client per request. For teaching, it can add latency to
every client request and fail a share of them on purpose.

Endpoints:

* ``GET /health``: 200 "ok".
* ``GET /clients``: JSON ``{"num_clients": n, "client_ids": [...]}``.
* ``GET /clients/<index>``: the examples of client ``<index>`` (0-based,
  sorted ids): two arrays in NumPy's ``.npy`` format, one after the other,
  ``pixels`` (uint8, 255 is the background) then ``label`` (int8), which
  `decode` reads back; headers ``X-Client-Id`` and
  ``X-Content-SHA256`` (of the body). 404 for an index out of range, 400 for
  a malformed one, 503 for an injected failure.

Start it from Python with `DataService` (a context manager that always stops
it), or by hand: ``python -m tutorial_helpers.data_service --port 8000``
(``--help`` lists the options).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import random
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from tutorial_helpers.runtime.processes import ManagedProcess

# A client's index as the kit writes it everywhere, in URIs (uri://3, see
# backends.parse_client_uri) and in this service's paths (/clients/3): a decimal
# without leading zeros, of ASCII digits only ([0-9], not \d, which also matches
# other scripts' digits), at most 9 of them.
CLIENT_INDEX = "(0|[1-9][0-9]{0,8})"
_CLIENT_PATH = re.compile("/clients/" + CLIENT_INDEX)


def _encode(arrays: dict[str, np.ndarray]) -> bytes:
    """A client's arrays as the service sends them: `pixels`, then `label`, each as a .npy.

    Not np.savez: the bytes of its zip container change with the Python
    version (zipfile's), and with them the checksum notebook 05 prints.
    """
    buffer = io.BytesIO()
    for name in ("pixels", "label"):
        np.save(buffer, arrays[name], allow_pickle=False)
    return buffer.getvalue()


def decode(body: bytes) -> dict[str, np.ndarray]:
    """The arrays of a body that `GET /clients/<index>` sent: {"pixels": ..., "label": ...}."""
    buffer = io.BytesIO(body)
    try:
        arrays = {name: np.load(buffer, allow_pickle=False) for name in ("pixels", "label")}
    except (ValueError, EOFError) as e:
        raise ValueError(f"Not a client's data from the kit's data service: {e}") from e
    if buffer.tell() != len(body):
        raise ValueError(f"Not a client's data from the kit's data service: {len(body) - buffer.tell()} "
                         "bytes follow the two arrays.")
    return arrays


class _Handler(BaseHTTPRequestHandler):
    server: _DataServer

    @property
    def timeout(self) -> float:
        """Seconds a connection may stay silent (socketserver applies it to each read
        and write); then it is closed, so a client that connects and sends nothing
        cannot hold a server thread forever."""
        return self.server.request_timeout

    def _send(self, status: int, body: bytes, content_type: str, headers=()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, payload) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def do_GET(self) -> None:  # the name http.server calls
        server = self.server
        if self.path == "/health":
            return self._send(200, b"ok", "text/plain")
        if self.path == "/clients":
            return self._send_json(
                200, {"num_clients": len(server.client_ids), "client_ids": server.client_ids}
            )
        match = _CLIENT_PATH.fullmatch(self.path)
        if not self.path.startswith("/clients/"):
            return self._send_json(404, {"error": f"no such endpoint: {self.path}"})
        if match is None:
            return self._send_json(
                400, {"error": f"malformed client index in {self.path!r}: expected /clients/<index>"}
            )
        index = int(match.group(1))
        if index >= len(server.client_ids):
            return self._send_json(
                404,
                {"error": f"no client {index}: there are {len(server.client_ids)} clients, "
                          f"0 to {len(server.client_ids) - 1}"},
            )
        if server.latency:
            time.sleep(server.latency)
        if server.should_fail(index):
            return self._send_json(503, {"error": "injected failure (the service is flaky on purpose)"})
        body = server.payloads[index]
        self._send(
            200, body, "application/octet-stream",
            [("X-Client-Id", server.client_ids[index]),
             ("X-Content-SHA256", hashlib.sha256(body).hexdigest())],
        )

    def log_message(self, format, *args) -> None:  # http.server's signature
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


class _DataServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 makes a burst of concurrent clients
    # wait for TCP's 1 s SYN retransmission; a round may open many at once.
    request_queue_size = 128

    def __init__(self, port: int, latency: float, failure_rate: float, seed: int,
                 request_timeout: float = 30.0):
        """Loads the sample's clients and listens on 127.0.0.1:`port` (0: a free port)."""
        from tutorial_helpers import sample

        clients = sample.client_arrays(sample.TRAIN)
        self.client_ids = list(clients)
        self.payloads = [_encode(arrays) for arrays in clients.values()]
        self.latency = latency
        self.failure_rate = failure_rate
        self.seed = seed
        self.request_timeout = request_timeout
        self._requests = [0] * len(self.client_ids)
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def should_fail(self, index: int) -> bool:
        """Whether to fail this request: decided by (seed, client, how many times it was
        asked for), so the same requests fail in every run, whatever their order."""
        with self._lock:
            self._requests[index] += 1
            count = self._requests[index]
        return random.Random(f"{self.seed}/{index}/{count}").random() < self.failure_rate


def _number_type(what: str, low: float, high: float = math.inf, *, low_open: bool = False):
    """An argparse type: a finite float in [low, high] (or (low, high] if `low_open`)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        too_low = value <= low if low_open else value < low
        if not math.isfinite(value) or too_low or value > high:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


def _port(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535, or 0 for a free one."""
    if not re.fullmatch(r"[0-9]{1,5}", text) or int(text) > 65535:
        raise argparse.ArgumentTypeError(
            f"must be a TCP port from 1 to 65535, or 0 for any free port; got {text!r}"
        )
    return int(text)


def main(argv=None) -> None:
    """Serves the sample until SIGTERM. Invalid arguments exit with status 2 and a
    message naming the argument."""
    parser = argparse.ArgumentParser(
        prog="python -m tutorial_helpers.data_service",
        description="Serve the EMNIST sample's clients over HTTP on 127.0.0.1.",
    )
    parser.add_argument("--port", type=_port, required=True,
                        help="port to listen on (0: any free port, printed at start)")
    parser.add_argument("--latency", type=_number_type("a number of seconds >= 0", 0.0),
                        default=0.0, help="seconds added to each client request")
    parser.add_argument("--failure-rate", type=_number_type("a share from 0 to 1", 0.0, 1.0),
                        default=0.0, help="share of client requests answered 503")
    parser.add_argument("--seed", type=int, default=0, help="seed of the injected failures")
    parser.add_argument("--request-timeout",
                        type=_number_type("a number of seconds > 0", 0.0, low_open=True),
                        default=30.0,
                        help="seconds a connection may stay silent before it is closed")
    args = parser.parse_args(argv)
    server = _DataServer(args.port, args.latency, args.failure_rate, args.seed, args.request_timeout)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    port = server.server_address[1]
    print(f"serving {len(server.client_ids)} clients on http://127.0.0.1:{port}", flush=True)
    server.serve_forever()
    server.server_close()


class DataService(ManagedProcess):
    """Runs the data service in a separate process; a context manager.

    Args:
      latency: seconds the service waits before answering each client
        request, to make "remote" visible.
      failure_rate: share of client requests answered with HTTP 503.
      seed: seed of the injected failures: which requests fail depends only
        on it, the client and how often that client was asked for.
      startup_timeout: seconds to wait for the service to answer.

    `url` is its base URL, e.g. "http://127.0.0.1:PORT". It is stopped on
    `stop()`, on leaving the `with` block, at interpreter exit and when this
    process dies.
    """

    def __init__(self, *, latency: float = 0.0, failure_rate: float = 0.0, seed: int = 0,
                 startup_timeout: float = 30.0):
        if latency < 0 or not 0 <= failure_rate <= 1:
            raise ValueError(
                f"latency must be >= 0 and failure_rate within [0, 1]; got latency={latency}, "
                f"failure_rate={failure_rate}."
            )
        # The service binds a free port itself and prints it: a port picked
        # here could be taken by another program before the service binds it.
        self.port, self.url = None, None
        super().__init__(
            [sys.executable, "-m", __name__, "--port=0",
             f"--latency={latency}", f"--failure-rate={failure_rate}", f"--seed={seed}"],
            description="data service",
        )
        try:
            started = self.wait_for_log(r"^serving \d+ clients on (http://127\.0\.0\.1:(\d+))$", startup_timeout)
            self.url, self.port = started.group(1), int(started.group(2))
            self.wait_for_http(f"{self.url}/health", startup_timeout)
        except BaseException:
            self.stop()
            raise

    def __str__(self) -> str:
        return f"data service (pid {self.pid}, {self.url or 'starting'})"

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"DataService(pid={self.pid}, url={self.url!r}, {state})"


if __name__ == "__main__":
    main()
