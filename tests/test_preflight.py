"""scripts/preflight: each decision from given facts, and one real run."""

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tutorial_helpers import KERNEL_NAME
from tutorial_helpers.workshop import preflight

ROOT = Path(__file__).resolve().parent.parent


def test_decisions_from_given_facts():
    assert preflight.check_platform("Linux", "x86_64").status == "ok"
    mac = preflight.check_platform("Darwin", "arm64")
    assert mac.status == "FIX" and "container" in mac.message and "Darwin arm64" in mac.message
    assert preflight.check_python((3, 11)).status == "ok"
    assert "PYTHON=/path/to/python3.11" in preflight.check_python((3, 12)).message
    assert preflight.check_disk(5 * 10**9, ROOT).status == "ok"
    low = preflight.check_disk(2 * 10**8, ROOT)
    assert low.status == "FIX" and "0.20 GB free" in low.message
    assert "run scripts/setup" in preflight.check_kernel({}).message
    other = {KERNEL_NAME: {"spec": {"argv": ["/elsewhere/bin/python", "-m", "ipykernel_launcher"]}}}
    assert "not this clone's" in preflight.check_kernel(other).message
    mine = {KERNEL_NAME: {"spec": {"argv": [sys.executable, "-m", "ipykernel_launcher"]}}}
    assert preflight.check_kernel(mine).status == "ok"
    assert preflight.check_private_network(True, "").status == "ok"
    assert preflight.check_jupyterlab(True, "").status == "ok"
    broken = preflight.check_jupyterlab(False, "jupyter lab exited with 1:\n...\nImportError: cannot import name 'X'")
    assert broken.status == "FIX" and "ImportError: cannot import name 'X'" in broken.message
    assert "exited with 1" in broken.message and "run scripts/setup" in broken.message
    silent = preflight.check_jupyterlab(False, "jupyter lab did not answer on http://127.0.0.1:1 in 60 s:\n")
    assert silent.status == "FIX" and "did not answer" in silent.message
    root = preflight.check_jupyterlab(True, "", as_root=True)
    assert root.status == "note" and "--allow-root" in root.message
    # Uncontained workers on a machine with addresses are a FIX, with the ways out;
    # inside the kit's container, or with no address but loopback, a note.
    on_a_network = preflight.check_private_network(False, "no user namespaces", addresses=["192.0.2.2%eth0"])
    assert on_a_network.status == "FIX" and "private_network=False" in on_a_network.message
    assert preflight.check_private_network(False, "no user namespaces", in_container=True,
                                           addresses=["192.0.2.2%eth0"]).status == "note"
    assert preflight.check_private_network(False, "no user namespaces", addresses=[]).status == "note"


def test_a_round_off_the_reference_is_reported():
    off = [{"client_work": {"train": {"num_examples": 1440, "loss": 2.3, "sparse_categorical_accuracy": 0.5}}}]
    result = preflight.check_training(off, 1.0)
    assert result.status == "FIX" and "off the reference" in result.message


@pytest.mark.process
def test_preflight_on_this_machine_says_ready():
    run = subprocess.run([ROOT / "scripts" / "preflight"], capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[-1].startswith("preflight: ready (")
    for what in ("platform", "python", "user", "disk", "kernel", "certificates", "jupyterlab", "ports",
                 "private network", "training"):
        assert any(f" {what}: " in line for line in lines), what


@pytest.mark.process
def test_ports_check_fails_with_the_loopback_interface_down():
    """In a new network namespace the loopback is down: binding works, connecting does not."""
    code = ("from tutorial_helpers.workshop import preflight; r = preflight.check_local_port(); "
            "print(r.status, r.message)")
    if subprocess.run(["unshare", "-rn", "true"], capture_output=True, check=False).returncode != 0:
        pytest.skip("unshare -rn is not allowed here (no user namespaces)")
    down = subprocess.run(["unshare", "-rn", sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert down.stdout.startswith("FIX") and "ip link set lo up" in down.stdout, down.stdout + down.stderr
    assert preflight.check_local_port().status == "ok"


def test_user_and_python_origin_are_named():
    assert preflight.check_user(1000, "ada").status == "ok"
    root = preflight.check_user(0, "root")
    assert root.status == "note" and "ordinary user" in root.message and "--allow-root" in root.message
    managed = preflight.check_python((3, 11), str(ROOT / ".kit-tools" / "python" / "cpython-3.11-linux"))
    assert managed.status == "ok" and "managed CPython" in managed.message
    assert "managed" not in preflight.check_python((3, 11), "/usr").message


@pytest.fixture
def tls_server(tmp_path):
    """An HTTPS server on 127.0.0.1 with a self-signed certificate, as a TLS-inspecting proxy presents one."""
    import http.server
    import ssl
    import threading

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "proxy.pem", tmp_path / "proxy.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=Campus TLS inspection", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True, timeout=60)
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/", cert
    server.shutdown()
    server.server_close()


@pytest.mark.process
def test_certificates_check_tells_an_untrusted_proxy_from_a_trusted_one(tls_server, monkeypatch):
    url, cert = tls_server
    untrusted = preflight.check_certificates(url, timeout=10)
    assert untrusted.status == "FIX", untrusted.message
    assert "update-ca-certificates" in untrusted.message and "SSL_CERT_FILE" in untrusted.message
    # The same server, once the machine trusts its certificate (as after update-ca-certificates).
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    trusted = preflight.check_certificates(url, timeout=10)
    assert trusted.status == "ok", trusted.message


def test_certificates_check_offline_is_a_note():
    with socket.socket() as probe:  # A port on loopback that nothing listens on.
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = preflight.check_certificates(f"https://127.0.0.1:{port}/", timeout=5)
    assert result.status == "note" and "KIT_WHEELHOUSE" in result.message


@pytest.mark.process
def test_certificates_check_hides_credentials_and_takes_an_http_error_as_an_answer(tls_server, monkeypatch):
    url, cert = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    answered = preflight.check_certificates(url + "no-such-page", timeout=10)
    assert answered.status == "ok" and "HTTP 404" in answered.message, answered.message
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for secret_url in (f"https://ada:s3cret@127.0.0.1:{port}/", "https://ada:s3cret@index.invalid:bad/"):
        result = preflight.check_certificates(secret_url, timeout=5)
        assert result.status == "note" and "s3cret" not in result.message, result.message
