"""A site on a machine of its own: `python -m tutorial_helpers.site_server`, reached over TCP and mutual TLS.

Sites on other machines are tried here as far as one machine allows: over
loopback as any user, and, as root, in a network namespace of the test's own,
connected to the controller by a virtual Ethernet pair with addresses of its
own (real TCP and TLS between two network stacks, not a Unix socket).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import portpicker
import psutil
import pytest

from tests.conftest import worker_pids
from tests.test_gatekeeper import sites  # noqa: F401  (a fixture)
from tests.test_sites import site_users, train  # noqa: F401  (site_users is a fixture)
from tutorial_helpers.sites import build_site_fed_avg, create_site_context
from tutorial_helpers.sites.gatekeeper import read_audit_log
from tutorial_helpers.sites.tls import make_workshop_ca
from tutorial_helpers.sites.worker import RemoteSite
from tutorial_helpers.sites.workspace import SiteWorkspace
from tutorial_helpers.worker_process import WorkerProcess


@pytest.fixture(scope="module")
def clinic_site(request, sites, tmp_path_factory):  # noqa: F811
    """(the user the clinic's site_server runs its worker as, the data root it serves).

    As root: the clinic's own account (site_server refuses a worker as root), and a copy of the clinic's
    root that it owns (the kit's other workers, in user namespaces, could not read it). Otherwise: this
    user, and the clinic's root.
    """
    _, _, roots, _ = sites
    if os.geteuid() != 0:
        return None, roots["clinic"]
    user = request.getfixturevalue("site_users")["clinic"]
    root = shutil.copytree(roots["clinic"], tmp_path_factory.mktemp("clinic-own") / "root")
    for path in [root.parent, root, *root.rglob("*")]:
        shutil.chown(path, user, user)
    return user, root


def start_site(site, root, folder, tls, listen, netns=None, user=None, extra=()):
    parts = [] if root is None else [f"--root={root}", f"--gatekeeper={folder}", f"--tls={tls}"]
    command = [sys.executable, "-m", "tutorial_helpers.site_server", f"--site={site}", *parts,
               f"--listen={listen}", *([] if user is None else [f"--user={user}"]), *extra]
    if netns is not None:
        command = ["ip", "netns", "exec", netns, *command]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(__file__)))
    line = server.stdout.readline()
    if "serves on" not in line:
        server.kill()
        pytest.fail(f"site_server did not start: {line}{server.communicate(timeout=30)[1]}")
    return server


def start_workspace(site, workspace, listen, user=None, extra=()):
    """`start_site` with the site's workspace instead of its three folders."""
    return start_site(site, None, None, None, listen, user=user, extra=(f"--workspace={workspace}", *extra))


def stop_site(server) -> list[int]:
    """Stops a site_server with SIGTERM; returns the pids of what it had started (all gone after)."""
    if server is None or server.poll() is not None:
        return []
    children = [p.pid for p in psutil.Process(server.pid).children(recursive=True)]
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in children):
        assert time.monotonic() < deadline, "the site's gatekeeper or worker outlived site_server"
        time.sleep(0.1)
    return children


@pytest.mark.root
def test_site_server_refuses_what_it_cannot_use_with_a_message_that_says_what_to_do(
        sites, clinic_site, tmp_path):  # noqa: F811
    _, _, roots, folders = sites
    worker_user, clinic_root = clinic_site
    ws = make_workshop_ca(tmp_path / "ws", ["clinic", "hospital"])

    def refused(*args):
        run = subprocess.run([sys.executable, "-m", "tutorial_helpers.site_server", *args], capture_output=True,
                             text=True, timeout=60, check=False)
        assert run.returncode == 2, run
        return run.stderr

    good = dict(site="clinic", root=clinic_root, gatekeeper=folders["clinic"], tls=ws / "clinic",
                listen="127.0.0.1:7000", **({} if worker_user is None else {"user": worker_user}))

    def arguments(**changed):
        return [f"--{key}={value}" for key, value in {**good, **changed}.items()]

    assert "is not HOST:PORT" in refused(*arguments(listen="7000"))
    assert "no catalogue.json there" in refused(*arguments(root=tmp_path))
    assert "does not exist" in refused(*arguments(gatekeeper=tmp_path / "nowhere"))
    assert "has no ca.pem, cert.pem, key.pem" in refused(*arguments(tls=tmp_path))
    assert "or all of --root, --gatekeeper and --tls" in refused(*arguments()[:3], "--listen=127.0.0.1:7000")
    workspace = SiteWorkspace.make(tmp_path / "clinic-workspace", tls=ws / "clinic")
    half_ready = refused("--site=clinic", f"--workspace={workspace.path}", "--listen=127.0.0.1:7000")
    assert f"the workspace {workspace.path} is not ready" in half_ready
    assert f"{workspace.local / 'approved.txt'} is missing: approve the training into it" in half_ready
    assert f"{workspace.data / 'catalogue.json'} is missing" in half_ready and "cert.pem is missing" not in half_ready
    assert "not both" in refused(*arguments(), f"--workspace={workspace.path}")
    with pytest.raises(FileExistsError, match="a workspace is made once"):
        SiteWorkspace.make(workspace.path)
    assert "a certificate for ['hospital'], not for site 'clinic'" in refused(*arguments(tls=ws / "hospital"))
    (ws / "clinic" / "key.pem").chmod(0o644)
    assert "key.pem can be read by others than its owner: chmod 600 it" in refused(*arguments())
    (ws / "clinic" / "key.pem").chmod(0o600)
    (folders["clinic"] / "approved.txt").chmod(0o666)
    assert "approved.txt can be changed by every user of this machine: chmod o-w it" in refused(*arguments())
    (folders["clinic"] / "approved.txt").chmod(0o644)
    empty = tmp_path / "empty-gatekeeper"
    empty.mkdir()
    assert "approved.txt approves nothing" in refused(*arguments(gatekeeper=empty))
    if worker_user is not None:  # As root: never a worker as root, nor one that owns the site's own files.
        assert "started as root, the worker would run as root" in refused(
            *[a for a in arguments() if not a.startswith("--user")])
        shutil.chown(ws / "clinic" / "key.pem", worker_user)
        assert "key.pem belongs to the worker's user" in refused(*arguments())


@pytest.mark.root
def test_a_site_on_loopback_over_tcp_and_mutual_tls_trains_and_comes_back_after_a_restart(
        sites, clinic_site, tmp_path):  # noqa: F811
    """The clinic runs as its own site_server; the controller reaches it by address, with the workshop's certificates.

    A round trains exactly as with the clinic on the kit's Unix socket. Then the clinic's server is
    stopped: the next round goes on without it (min_sites=2), and once it serves again at the same
    address, it takes part again.
    """
    ids, catalogue, roots, folders = sites
    worker_user, clinic_root = clinic_site
    ws = make_workshop_ca(tmp_path / "ws", list(catalogue))
    process = build_site_fed_avg()
    with create_site_context(roots=roots):
        expected, expected_metrics = train(process, ids)
    listen = f"127.0.0.1:{portpicker.pick_unused_port()}"
    started, server, others = [], None, {}
    try:
        server = start_site("clinic", clinic_root, folders["clinic"], ws / "clinic", listen, user=worker_user)
        clinic = RemoteSite(listen, site="clinic", tls=ws / "controller")
        others = {site: WorkerProcess(cwd=root) for site, root in roots.items() if site != "clinic"}
        with create_site_context(catalogue, site_workers={"clinic": clinic, **others}, min_sites=2) as ctx:
            weights, metrics = train(process, ids)
            state = process.initialize()
            started += stop_site(server)
            without = process.next(state, ids)
            assert list(ctx.last_round.dropped) == ["clinic"] and ctx.last_round.dropped_clients == catalogue["clinic"]
            assert f"Site 'clinic' does not answer at {listen}" in ctx.last_round.dropped["clinic"][1]
            waiting = time.monotonic()
            again = process.next(without.state, ids)  # Asked for PING_TIMEOUT (2 s), then dropped.
            assert "does not answer yet" in ctx.last_round.dropped["clinic"][1]
            # Less than its connect_timeout (10 s), which the ping does not wait: 2 s, and the others train.
            assert time.monotonic() - waiting < clinic.connect_timeout
            server = start_site("clinic", clinic_root, folders["clinic"], ws / "clinic", listen, user=worker_user)
            back = process.next(again.state, ids)
            assert ctx.last_round.returned == ["clinic"] and ctx.last_round.dropped == {}
            pids = [w.pid for w in others.values()]
    finally:
        started += stop_site(server)
        for worker in others.values():
            worker.stop()
    assert metrics == expected_metrics
    for round_got, round_expected in zip(weights, expected, strict=True):
        for a, b in zip(round_got, round_expected, strict=True):
            np.testing.assert_array_equal(a, b)
    trained = back.metrics["client_work"]["train"]["num_examples"]
    assert without.metrics["client_work"]["train"]["num_examples"] < trained
    assert "Compute" in [c["call"] for c in read_audit_log(folders["clinic"]) if c["verdict"] == "forwarded"]
    assert not worker_pids() & set(pids + started)


@pytest.fixture
def site_network():
    """A network namespace with a virtual Ethernet link to this one: (namespace, its address, ours). Root only."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a network namespace and a virtual Ethernet pair; as an ordinary user, "
                    "test_a_site_on_loopback_over_tcp_and_mutual_tls_... tries the same site server over loopback")
    if shutil.which("ip") is None:
        pytest.skip("needs the ip command (iproute2) to make the sites' network")
    name, here, there = f"tffkit{os.getpid()}", f"vk{os.getpid()}h", f"vk{os.getpid()}s"

    def ip(*args, netns=None):
        command = ["ip", *args] if netns is None else ["ip", "netns", "exec", netns, "ip", *args]
        subprocess.run(command, check=True, capture_output=True, timeout=30)

    ip("netns", "add", name)
    try:
        ip("link", "add", here, "type", "veth", "peer", "name", there)
        ip("link", "set", there, "netns", name)
        ip("addr", "add", "10.213.7.1/30", "dev", here)
        ip("link", "set", here, "up")
        ip("addr", "add", "10.213.7.2/30", "dev", there, netns=name)
        ip("link", "set", there, "up", netns=name)
        ip("link", "set", "lo", "up", netns=name)
        yield name, "10.213.7.2", "10.213.7.1"
    finally:
        subprocess.run(["ip", "netns", "pids", name], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", here], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@pytest.mark.root
def test_a_site_in_another_network_namespace_trains_over_a_virtual_ethernet_link_with_mutual_tls(
        sites, site_network, clinic_site, tmp_path):  # noqa: F811
    ids, catalogue, roots, folders = sites
    worker_user, clinic_root = clinic_site
    netns, address, _ = site_network
    ws = make_workshop_ca(tmp_path / "ws", list(catalogue), addresses={"clinic": [address]})
    process = build_site_fed_avg()
    with create_site_context(roots=roots):
        expected, expected_metrics = train(process, ids)
    server = None
    try:
        server = start_site("clinic", clinic_root, folders["clinic"], ws / "clinic", f"{address}:7000", netns,
                            user=worker_user)
        listening = subprocess.run(["ip", "netns", "exec", netns, "ss", "-Hltn"], capture_output=True, text=True,
                                   check=True, timeout=30).stdout.split("\n")
        ports = sorted(line.split()[3] for line in listening if line.strip())
        assert ports == [f"{address}:7000"]  # The site opens one port; its worker's is in a namespace of its own.
        with socket.socket() as probe:  # Nothing answers at the worker's port from here.
            probe.settimeout(5)
            assert probe.connect_ex((address, 8000)) != 0
        clinic = RemoteSite(f"{address}:7000", site="clinic", tls=ws / "controller")
        others = {site: WorkerProcess(cwd=root) for site, root in roots.items() if site != "clinic"}
        with create_site_context(catalogue, site_workers={"clinic": clinic, **others}) as ctx:
            weights, metrics = train(process, ids)
            pids = [w.pid for w in others.values()]
        assert ctx.closed
    finally:
        started = stop_site(server)
    assert metrics == expected_metrics
    for round_got, round_expected in zip(weights, expected, strict=True):
        for a, b in zip(round_got, round_expected, strict=True):
            np.testing.assert_array_equal(a, b)
    assert not worker_pids() & set(pids + started)


class Flood:
    """`slots` connections from `source` that each send the first byte of a TLS hello, then nothing; each is
    opened again as soon as the site closes it. What a stranger does to hold a site's places."""

    def __init__(self, listen: str, source: str = "127.0.0.2", slots: int = 16):
        import threading

        host, port = listen.rsplit(":", 1)
        self.target, self.source, self.stop = (host, int(port)), source, threading.Event()
        self.opened = 0
        self.threads = [threading.Thread(target=self._hold, daemon=True) for _ in range(slots)]

    def _hold(self):
        while not self.stop.is_set():
            try:
                with socket.socket() as s:
                    s.bind((self.source, 0))
                    s.connect(self.target)
                    s.sendall(b"\x16")
                    self.opened += 1
                    s.settimeout(0.2)
                    while not self.stop.is_set():
                        try:
                            if not s.recv(1024):
                                break  # Closed by the site: open another straight away.
                        except TimeoutError:
                            continue
            except OSError:
                pass
            time.sleep(0.01)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        time.sleep(1)  # Every slot taken.
        return self

    def __exit__(self, *_):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=5)


@pytest.mark.root
@pytest.mark.process
@pytest.mark.parametrize("defended", [True, False], ids=["defended", "control-without-the-limits"])
def test_strangers_holding_connections_before_tls_do_not_lock_the_controller_out(
        sites, clinic_site, tmp_path, defended):  # noqa: F811
    """Sixteen connections from another address, each one byte into its TLS hello, reopened at once.

    With the site's limits (a few connections per address still in their handshake, and only connections
    past it counted against the site's cap), the controller still connects and trains. The control: a site
    whose limits are those of the kit before (16 connections, counted from the first byte, from any
    address) is locked: the controller is not let in.
    """
    ids, catalogue, roots, folders = sites
    worker_user, clinic_root = clinic_site
    ws = make_workshop_ca(tmp_path / "ws", ["clinic"])
    listen = f"127.0.0.1:{portpicker.pick_unused_port()}"
    limits = () if defended else ("--max-pending-per-source=1000", "--max-pending=16")
    # The site as a workspace: startup/ from `tls make`, local/ the approvals, data/ the clinic's root.
    workspace = SiteWorkspace.make(tmp_path / "clinic", tls=ws / "clinic")
    shutil.copytree(clinic_root, workspace.data, dirs_exist_ok=True)
    shutil.copy(folders["clinic"] / "approved.txt", workspace.local)
    if worker_user is not None:
        for path in [workspace.data, *workspace.data.rglob("*")]:
            shutil.chown(path, worker_user, worker_user)
    server = start_workspace("clinic", workspace.path, listen, user=worker_user, extra=limits)
    try:
        with Flood(listen) as flood:
            if defended:
                process = build_site_fed_avg()
                clinic = RemoteSite(listen, 5, site="clinic", tls=ws / "controller")
                with create_site_context({"clinic": catalogue["clinic"]}, site_workers={"clinic": clinic}):
                    result = process.next(process.initialize(), catalogue["clinic"])
                assert result.metrics["client_work"]["train"]["num_examples"] > 0
            else:
                with pytest.raises(ConnectionError, match="Site 'clinic' does not answer"):
                    RemoteSite(listen, 5, site="clinic", tls=ws / "controller")
            assert flood.opened >= 16
    finally:
        stop_site(server)
