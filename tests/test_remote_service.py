"""The data service, the HTTP backend, and worker-side loading, including what goes wrong."""

import asyncio
import json
import os
import signal
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow_federated as tff
from tensorflow_federated.proto.v0 import computation_pb2 as pb

from tests.conftest import worker_pids
from tests.test_backends import MALFORMED
from tutorial_helpers import data, model, remote_data
from tutorial_helpers.data_service import DataService, decode
from tutorial_helpers.http_backend import HttpDataBackend
from tutorial_helpers.multi_worker import create_multi_worker_context, worker_side_process
from tutorial_helpers.sample import TRAIN, client_arrays


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def materialize(backend, uri):
    return asyncio.run(backend.materialize(pb.Data(uri=uri), None))


@pytest.fixture(scope="module")
def service():
    with DataService() as svc:
        yield svc


@pytest.mark.process
def test_service_runs_in_its_own_process_and_serves_every_client(service):
    assert service.pid != os.getpid() and service.pid in worker_pids()
    status, body, _ = get(f"{service.url}/clients")
    listing = json.loads(body)
    assert status == 200 and listing["num_clients"] == 99
    assert listing["client_ids"] == sorted(listing["client_ids"])
    status, body, headers = get(f"{service.url}/clients/3")
    assert status == 200 and headers["X-Client-Id"] == listing["client_ids"][3]
    expected = client_arrays(TRAIN)[listing["client_ids"][3]]
    arrays = decode(body)
    np.testing.assert_array_equal(arrays["pixels"], expected["pixels"])
    np.testing.assert_array_equal(arrays["label"], expected["label"])
    with pytest.raises(ValueError, match="bytes follow the two arrays"):
        decode(body + b"x")
    with pytest.raises(ValueError, match="Not a client's data"):
        decode(body[:100])


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [("/clients/99", 404, "no client 99"), ("/clients/abc", 400, "malformed client index"),
     ("/clients/-1", 400, "malformed"), ("/clients/../etc/passwd", 400, "malformed"),
     ("/nothing", 404, "no such endpoint")],
)
@pytest.mark.process
def test_service_answers_bad_requests_with_clear_errors(service, path, status, message):
    got_status, body, _ = get(service.url + path)
    assert got_status == status and message in json.loads(body)["error"]


@pytest.mark.process
def test_http_backend_gives_the_same_data_as_tffs_loader(service, emnist):
    train, _ = emnist
    backend = HttpDataBackend(service.url)
    for index in (0, 42, 98):
        fetched = list(materialize(backend, f"uri://{index}").as_numpy_iterator())
        loaded = list(data.client_dataset(train, index).as_numpy_iterator())
        assert len(fetched) == len(loaded)
        for a, b in zip(fetched, loaded, strict=True):
            np.testing.assert_array_equal(a["x"], b["x"])
            np.testing.assert_array_equal(a["y"], b["y"])
    assert backend.requests == 3 and backend.retries == 0 and backend.bytes_received > 0


@pytest.mark.process
def test_fetches_are_concurrent_up_to_the_bound():
    with DataService(latency=0.2) as svc:
        unbounded = HttpDataBackend(svc.url, max_concurrency=16)
        bounded = HttpDataBackend(svc.url, max_concurrency=3)

        async def fetch_all(backend):
            await asyncio.gather(*(backend.fetch(f"uri://{i}") for i in range(12)))

        asyncio.run(fetch_all(unbounded))
        asyncio.run(fetch_all(bounded))
    assert unbounded.max_in_flight == 12
    assert bounded.max_in_flight == 3


@pytest.mark.process
def test_transient_failures_are_retried_and_the_data_arrives_intact():
    with DataService(failure_rate=0.3, seed=0) as svc:
        backend = HttpDataBackend(svc.url, attempts=6, backoff=0.01)

        async def fetch_all():
            return await asyncio.gather(*(backend.fetch(f"uri://{i}") for i in range(20)))

        bodies = asyncio.run(fetch_all())
    assert backend.retries > 0
    assert backend.requests == 20 + backend.retries
    assert all(len(body) > 0 for body in bodies)


@pytest.mark.process
def test_a_client_the_service_does_not_have_is_an_error_without_retries(service):
    backend = HttpDataBackend(service.url, attempts=5)
    with pytest.raises(LookupError, match=r"has no data for 'uri://500'.*no client 500"):
        materialize(backend, "uri://500")
    assert backend.requests == 1


@pytest.mark.process
@pytest.mark.parametrize("uri", MALFORMED)
def test_malformed_uris_are_rejected_by_name_before_any_request(service, uri):
    backend = HttpDataBackend(service.url)
    with pytest.raises(ValueError) as raised:
        materialize(backend, uri)
    assert repr(uri) in str(raised.value)
    assert backend.requests == 0


@pytest.mark.process
def test_a_service_that_is_down_is_a_clear_error():
    with DataService() as svc:
        url = svc.url
    backend = HttpDataBackend(url, attempts=3, backoff=0.01)
    with pytest.raises(ConnectionError, match=rf"Could not fetch 'uri://1' from the data service at {url}: "
                                              r"3 attempts failed.*Is the service running"):
        materialize(backend, "uri://1")


@pytest.mark.process
def test_a_service_that_does_not_answer_times_out():
    with DataService(latency=5.0) as svc:
        backend = HttpDataBackend(svc.url, timeout=0.3, attempts=2, backoff=0.01)
        with pytest.raises(ConnectionError, match=r"no answer within 0.3 s"):
            materialize(backend, "uri://1")


def test_bad_service_settings_are_rejected():
    with pytest.raises(ValueError, match="failure_rate within"):
        DataService(failure_rate=1.5)
    with pytest.raises(ValueError, match="max_concurrency=0"):
        HttpDataBackend("http://127.0.0.1:1", max_concurrency=0)


@pytest.fixture(scope="module")
def fedavg():
    return model.build_fed_avg()


DATASET_TYPE = model.DATASET_TYPE


@pytest.mark.process
@pytest.mark.timeout(120)
def test_the_service_killed_in_the_middle_of_a_round_is_a_clear_error(fedavg):
    with DataService(latency=0.5) as svc:
        backend = HttpDataBackend(svc.url, timeout=2.0, attempts=3, backoff=0.05)
        handle = tff.framework.CreateDataDescriptor([f"uri://{i}" for i in range(5)], DATASET_TYPE)
        with remote_data.create_execution_context(backend) as ctx:
            state = fedavg.initialize()

            def kill_when_fetching():
                while backend.requests == 0:  # The round has reached the backend.
                    threading.Event().wait(0.01)
                os.kill(svc.pid, signal.SIGKILL)

            killer = threading.Thread(target=kill_when_fetching, daemon=True)
            killer.start()
            with pytest.raises(RuntimeError) as raised:
                fedavg.next(state, handle)
            killer.join()
            worker = ctx.worker.pid
    message = str(raised.value)
    assert "HttpDataBackend.materialize failed for URI 'uri://" in message
    assert "Is the service running?" in message
    assert not worker_pids() & {svc.pid, worker}


@pytest.mark.process
def test_worker_side_loading_sends_only_client_ids(emnist, fedavg):
    train, _ = emnist
    process = worker_side_process(train, fedavg)
    assert str(process.next.type_signature.parameter[1]) == "{str}@CLIENTS"
    ids = train.client_ids[:5]
    with create_multi_worker_context(2) as ctx:
        state = process.initialize()
        result = process.next(state, ids)
        sent = ctx.client_value_bytes
        pids = [w.pid for w in ctx.workers]
    assert result.metrics["client_work"]["train"]["num_examples"] == 288 * data.NUM_EPOCHS  # 288 digits.
    # Five ids of about ten characters, in two messages: bytes, not images.
    assert 0 < sent < 500
    assert not worker_pids() & set(pids)


@pytest.mark.process
def test_a_killed_worker_of_several_gives_a_clear_error(emnist, fedavg):
    train, _ = emnist
    process = worker_side_process(train, fedavg)
    with create_multi_worker_context(2) as ctx:
        state = process.initialize()
        os.kill(ctx.workers[1].pid, signal.SIGKILL)
        ctx.workers[1]._process.wait(timeout=10)
        with pytest.raises(RuntimeError, match=r"TFF worker \(pid \d+, [^)]+\) is not running"):
            process.next(state, train.client_ids[:4])
        pids = [w.pid for w in ctx.workers]
    assert not worker_pids() & set(pids)


def test_remote_worker_addresses_that_do_not_answer_are_a_clear_error():
    from tutorial_helpers.worker_process import RemoteWorker

    with pytest.raises(ConnectionError, match=r"No TFF worker answers at 127.0.0.1:9"):
        RemoteWorker("127.0.0.1:9", connect_timeout=0.5)


def test_a_connection_that_sends_nothing_is_closed_after_the_request_timeout():
    import socket
    import time

    from tutorial_helpers.data_service import _DataServer

    server = _DataServer(0, latency=0.0, failure_rate=0.0, seed=0, request_timeout=0.3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with socket.create_connection(server.server_address, timeout=10) as silent:
            start = time.monotonic()
            assert silent.recv(1) == b""  # The server closed the connection...
            waited = time.monotonic() - start
        assert 0.2 < waited < 5  # ...after the timeout, not at once and not never.
        status, body, _ = get(f"{url}/health")  # Requests that do arrive are answered.
        assert (status, body) == (200, b"ok")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--latency", "-1", "--port", "1234"], "argument --latency: must be a number of seconds >= 0, got '-1'"),
        (["--port", "65536"], "argument --port: must be a TCP port from 1 to 65535"),
        (["--port", "http"], "argument --port: must be a TCP port"),
        (["--port", "1234", "--failure-rate", "1.5"],
         "argument --failure-rate: must be a share from 0 to 1, got '1.5'"),
        (["--port", "1234", "--failure-rate", "nan"], "argument --failure-rate"),
        (["--port", "1234", "--request-timeout", "0"], "argument --request-timeout: must be a number of seconds > 0"),
        ([], "the following arguments are required: --port"),
    ],
)
@pytest.mark.process
def test_the_service_rejects_bad_command_line_arguments_by_name(args, message):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "tutorial_helpers.data_service", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "serving" not in result.stdout  # It stopped before loading any data.


def test_retry_waits_are_jittered_below_an_exponential_bound():
    backend = HttpDataBackend("http://127.0.0.1:1", backoff=0.1, seed=7)
    waits = [[backend.retry_delay(attempt) for attempt in (1, 2, 3)] for _ in range(200)]
    for attempt, bound in enumerate((0.1, 0.2, 0.4)):
        draws = [w[attempt] for w in waits]
        assert all(0 <= d <= bound for d in draws)
        assert max(draws) > 0.8 * bound and min(draws) < 0.2 * bound  # Spread over the range.
    again = HttpDataBackend("http://127.0.0.1:1", backoff=0.1, seed=7)
    assert [[again.retry_delay(attempt) for attempt in (1, 2, 3)] for _ in range(200)] == waits


def test_the_error_after_the_last_attempt_is_chained_to_its_cause():
    import aiohttp
    import portpicker

    url = f"http://127.0.0.1:{portpicker.pick_unused_port()}"  # Nothing listens there.
    backend = HttpDataBackend(url, attempts=2, backoff=0.0)
    with pytest.raises(ConnectionError, match="2 attempts failed") as raised:
        materialize(backend, "uri://1")
    assert isinstance(raised.value.__cause__, aiohttp.ClientConnectionError)
    assert backend.requests == 2 and backend.retries == 1


@pytest.mark.process
def test_wait_for_log_returns_the_line_a_child_prints_and_names_what_it_waited_for():
    import sys

    from tutorial_helpers.runtime.processes import ManagedProcess

    script = "import time; time.sleep(0.3); print('listening on port 4711', flush=True); time.sleep(30)"
    with ManagedProcess([sys.executable, "-c", script], description="printer") as child:
        match = child.wait_for_log(r"^listening on port (\d+)$", timeout=10)
        assert match.group(1) == "4711"
        with pytest.raises(TimeoutError, match=r"printer \(pid \d+\) did not print 'never' within 1 s"):
            child.wait_for_log("never", timeout=1)
    quitter = ManagedProcess([sys.executable, "-c", "print('bye'); raise SystemExit(3)"], description="quitter")
    try:
        with pytest.raises(RuntimeError, match=r"exited with code 3\. Its log ends with:\nbye"):
            quitter.wait_for_log("never", timeout=10)
    finally:
        quitter.stop()


@pytest.mark.process
def test_two_services_started_together_bind_ports_of_their_own():
    with DataService() as first, DataService() as second:
        assert first.port != second.port
        for service in (first, second):
            with urllib.request.urlopen(f"{service.url}/health") as response:
                assert response.status == 200


class _CorruptingHandler:
    """Serves /clients/0 with a body whose X-Content-SHA256 is wrong the first `corrupt` times."""

    @staticmethod
    def server(corrupt: int):
        import hashlib
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        served = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = b"the client's examples"
                served.append(self.path)
                damaged = len(served) <= corrupt
                digest = hashlib.sha256(b"other bytes" if damaged else body).hexdigest()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Content-SHA256", digest)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return httpd, served


@pytest.mark.parametrize(("corrupt", "attempts", "arrives"), [(2, 4, True), (3, 3, False)])
def test_a_body_that_fails_its_checksum_is_fetched_again(corrupt, attempts, arrives):
    httpd, served = _CorruptingHandler.server(corrupt)
    try:
        backend = HttpDataBackend(f"http://127.0.0.1:{httpd.server_address[1]}", attempts=attempts, backoff=0.01)
        if arrives:
            assert asyncio.run(backend.fetch("uri://0")) == b"the client's examples"
            assert (backend.requests, backend.retries) == (corrupt + 1, corrupt)
        else:
            with pytest.raises(ConnectionError, match=r"3 attempts failed, the last with .*X-Content-SHA256"):
                asyncio.run(backend.fetch("uri://0"))
            assert backend.requests == 3
        assert served == ["/clients/0"] * backend.requests
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.process
def test_a_multi_worker_context_uses_workers_started_elsewhere_and_leaves_them_running():
    """`addresses=`: the kit connects to running workers and, on close, only disconnects."""
    from tutorial_helpers.worker_process import WorkerProcess

    @tff.tensorflow.computation(np.int32)
    def double(x):
        return x * 2

    @tff.federated_computation(tff.FederatedType(np.int32, tff.CLIENTS))
    def doubled_sum(values):
        return tff.federated_sum(tff.federated_map(double, values))

    with WorkerProcess() as first, WorkerProcess() as second:
        with create_multi_worker_context(addresses=[first.address, second.address]) as ctx:
            assert [worker.address for worker in ctx.workers] == [first.address, second.address]
            assert doubled_sum([1, 2, 3, 4]) == 20
        assert first.is_running() and second.is_running()
