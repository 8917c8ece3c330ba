"""The processes the kit starts: contained, interrupt-proof, and always stopped."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from jupyter_client.manager import start_new_kernel

from tutorial_helpers import KERNEL_NAME
from tutorial_helpers.runtime import launcher, processes
from tutorial_helpers.worker_process import WorkerProcess

KERNEL = KERNEL_NAME
TCP_LISTEN = "0A"  # The state column of /proc/net/tcp{,6}.


def listening_ports(pid: int) -> list[tuple[str, int]]:
    """(address in hex, port) of every socket `pid` listens on, read in its own network."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = []
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                address, port = fields[1].split(":")
                if fields[3] == TCP_LISTEN and fields[9] in inodes:
                    found.append((address, int(port, 16)))
    return found


def worker_binary_of(worker: WorkerProcess) -> psutil.Process:
    return next(p for p in [psutil.Process(worker.pid), *psutil.Process(worker.pid).children()]
                if p.cmdline()[0].endswith("worker_binary"))


contained = pytest.mark.skipif(
    not processes.private_network_status()[0],
    reason=f"this system forbids private network namespaces: {processes.private_network_status()[1]}",
)


@pytest.mark.process
@contained
def test_a_worker_listens_only_inside_its_own_network_reached_by_a_private_socket():
    with WorkerProcess() as worker:
        binary = worker_binary_of(worker)
        # It listens on the wildcard address, as TFF's worker always does...
        assert [port for _, port in listening_ports(binary.pid)] == [worker.port]
        # ...but in a network namespace that is not this machine's...
        assert os.readlink(f"/proc/{binary.pid}/ns/net") != os.readlink("/proc/self/ns/net")
        with open(f"/proc/{binary.pid}/net/dev") as f:
            interfaces = [line.split(":")[0].strip() for line in f.readlines()[2:]]
        assert interfaces == ["lo"]
        # ...so no socket of this machine's network is the worker's.
        assert not [c for c in psutil.net_connections("inet") if c.pid == binary.pid]
        # The way in is a Unix socket that only this user can open.
        assert worker.address == f"unix:{worker.socket_path}"
        assert os.stat(os.path.dirname(worker.socket_path)).st_mode & 0o777 == 0o700
        assert os.stat(os.path.dirname(worker.socket_path)).st_uid == os.getuid()
    assert not os.path.exists(os.path.dirname(worker.socket_path))
    assert not binary.is_running()


@pytest.mark.process
def test_an_uncontained_worker_is_what_tffs_own_is_and_says_so():
    with WorkerProcess(private_network=False) as worker:
        binary = worker_binary_of(worker)
        listening = listening_ports(binary.pid)
        assert listening == [("0" * 32, worker.port)]  # [::]: every interface.
        assert worker.address == f"127.0.0.1:{worker.port}"


ON_THE_NETWORK = ["192.0.2.2%eth0", "fe80::1%eth0"]  # Documentation addresses (RFC 5737).


def test_where_no_private_network_can_be_made_a_worker_on_a_network_is_refused(monkeypatch):
    """Simulates a system that forbids network namespaces (Ubuntu 24.04's AppArmor) on a
    machine with addresses: the worker is not started, and the error says what to do."""
    monkeypatch.setattr(processes, "private_network_status", lambda: (False, "simulated: denied"))
    monkeypatch.setattr(processes, "network_addresses", lambda: ON_THE_NETWORK)
    monkeypatch.delenv("KIT_CONTAINER", raising=False)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(RuntimeError, match=r"will not start a TFF worker here.*simulated: denied") as refused:
        WorkerProcess()
    message = str(refused.value)
    for way_out in ("apparmor_parser -r /etc/apparmor.d/tff-kit", os.path.realpath(sys.executable),
                    "kernel.apparmor_restrict_unprivileged_userns=0", "'Containers'", "private_network=False"):
        assert way_out in message
    assert "192.0.2.2%eth0" in message
    assert {p.pid for p in psutil.Process().children(recursive=True)} == before  # Nothing started.


@pytest.mark.process
def test_inside_the_kits_container_an_uncontained_worker_runs_and_says_so_once(monkeypatch):
    monkeypatch.setattr(processes, "private_network_status", lambda: (False, "simulated: denied"))
    monkeypatch.setattr(processes, "network_addresses", lambda: ON_THE_NETWORK)
    monkeypatch.setenv("KIT_CONTAINER", "1")
    processes.warn_uncontained.cache_clear()
    with pytest.warns(RuntimeWarning, match="publishes only Jupyter's port"), WorkerProcess() as worker:
        assert not worker.contained and worker.address == f"127.0.0.1:{worker.port}"
    assert not worker.is_running()


def test_the_policy_allows_an_uncontained_worker_only_where_nothing_else_reaches_it():
    refused, why = processes.uncontained_policy("denied", in_container=False, addresses=ON_THE_NETWORK)
    assert not refused and "Three ways out" in why
    assert processes.uncontained_policy("denied", in_container=True, addresses=ON_THE_NETWORK)[0]
    alone, why = processes.uncontained_policy("denied", in_container=False, addresses=[])
    assert alone and "no address but loopback" in why


@pytest.mark.process
def test_network_addresses_sees_this_machines_and_none_in_an_empty_network():
    import shutil
    import subprocess

    if not shutil.which("unshare") or not processes.private_network_status()[0]:
        pytest.skip("no unshare, or no user namespaces, to make an empty network")
    code = "from tutorial_helpers.runtime.processes import network_addresses as a; print(a())"
    inside = subprocess.run(["unshare", "-rn", sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert inside.stdout.strip() == "[]"  # Only a loopback, and that one down.
    outside = processes.network_addresses()
    assert all("%" in a and not a.endswith("%lo") for a in outside)


@pytest.mark.process
def test_socket_folders_of_processes_that_are_gone_are_removed_by_the_next_start(tmp_path, monkeypatch):
    """A kernel killed by SIGKILL cannot remove its worker's socket folder; the next
    process that makes one removes the folders whose owner is gone, and no other."""
    import subprocess
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphan = tmp_path / f"tff-kit-{gone.pid}-abc"
    alive = tmp_path / f"tff-kit-{os.getppid()}-def"  # pytest's parent: running.
    unnamed = tmp_path / "tff-kit-old"  # Made before folders carried a pid.
    for folder in (orphan, alive, unnamed):
        folder.mkdir(mode=0o700)
    orphan_log = tmp_path / f"tff-kit-{gone.pid}-log-TFF_worker-x.log"  # Logs are named the same way.
    alive_log = tmp_path / f"tff-kit-{os.getppid()}-log-TFF_worker-y.log"
    for log in (orphan_log, alive_log):
        log.write_text("a worker's log")
    assert sorted(launcher.remove_orphans()) == sorted([str(orphan), str(orphan_log)])
    assert not orphan.exists() and alive.exists() and unnamed.exists()
    assert not orphan_log.exists() and alive_log.exists()


@pytest.mark.process
def test_a_temporary_folder_of_a_killed_process_is_removed_by_the_next_one(tmp_path):
    """A kernel killed by SIGKILL leaves its sites' folder; the kit's next temporary folder removes it."""
    import signal
    import subprocess

    env = {**os.environ, "TMPDIR": str(tmp_path)}
    script = ("import sys, time; from tutorial_helpers.runtime.processes import temporary_folder; "
              "folder = temporary_folder('sites'); print(folder.name, flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    left = Path(child.stdout.readline().strip())
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    child.stdout.close()
    assert left.is_dir() and left.name.startswith(f"tff-kit-{child.pid}-sites-")
    assert (left.stat().st_mode & 0o777) == 0o700
    script = ("from tutorial_helpers.runtime.processes import temporary_folder; "
              "folder = temporary_folder('sites'); print(folder.name)")
    made = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert not left.exists()
    assert not Path(made.stdout.strip()).exists()  # Removed at that interpreter's exit.


@pytest.mark.process
def test_a_killed_kernels_sites_folder_and_logs_go_with_its_workers_not_with_the_next_process(tmp_path):
    """SIGKILL a controller that holds a sites folder and a contained worker: the worker's launcher, stopped
    by the controller's death, removes the folder (a site's raw examples) and the logs, with no other kit
    process started. The control: the same folder of a live controller stays."""
    import signal

    child = start_controller(tmp_path, (
        "import time; from tutorial_helpers.runtime.processes import temporary_folder; "
        "from tutorial_helpers.worker_process import WorkerProcess; "
        "folder = temporary_folder('sites'); open(folder.name + '/examples.tfrecord', 'w').write('raw'); "
        "worker = WorkerProcess(private_network=True); print(folder.name, flush=True); time.sleep(120)"))
    try:
        left = Path(child.stdout.readline().strip())
        assert left.is_dir() and (left / "examples.tfrecord").exists()
        logs = list(tmp_path.glob(f"tff-kit-{child.pid}-log-*"))
        assert logs, list(tmp_path.iterdir())
        time.sleep(1)
        assert left.exists()  # The control: a live controller keeps its folder.
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    assert_swept(tmp_path, child.pid)


def start_controller(tmp_path: Path, script: str) -> subprocess.Popen:
    """A controller (``python -c script``) whose temporary folder is `tmp_path`; skips where nothing is contained."""
    if not processes.private_network_status()[0]:
        pytest.skip("no private network here: commands are not contained, so no launcher outlives the kernel")
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmp_path)})


def assert_swept(folder: Path, pid: int, *also_running: psutil.Process) -> None:
    """Within a bound, process `pid`'s kit folders and logs in `folder` are gone, and `also_running` have ended.

    A bound, not a speed target: the launcher stops its command (SIGTERM, then SIGKILL after a wait), waits for
    the killed process to end (its threads end after the one that started the launcher), then sweeps. On failure,
    the launcher's log says whether it swept.
    """
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (list(folder.glob(f"tff-kit-{pid}-*"))
                                           or any(p.is_running() for p in also_running)):
        time.sleep(0.2)
    remaining = list(folder.glob(f"tff-kit-{pid}-*"))
    logs = {path.name: path.read_text(errors="replace")[-2000:] for path in remaining if path.suffix == ".log"}
    assert not remaining, (remaining, logs)
    assert not [p for p in also_running if p.is_running()]


@pytest.mark.process
def test_a_kernel_killed_while_its_contained_command_starts_leaves_no_folder_and_no_process(tmp_path):
    """SIGKILL the controller while its contained command has not listened yet (the launcher still waits for its
    port): the launcher stops the command and sweeps the folder, instead of dying of the signal unswept."""
    import signal

    child = start_controller(tmp_path, (
        "import sys, time; from tutorial_helpers.runtime.processes import ManagedProcess, temporary_folder; "
        "folder = temporary_folder('sites'); "
        "never = ManagedProcess([sys.executable, '-c', 'import time; time.sleep(300)'], 'never listens', "
        "private_network=True, inner_port=45678); "
        "print(folder.name, never.pid, flush=True); time.sleep(120)"))
    try:
        folder, launcher_pid = child.stdout.readline().split()
        launcher = psutil.Process(int(launcher_pid))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not launcher.children():  # The command has started.
            time.sleep(0.1)
        command = launcher.children()[0]
        assert Path(folder).is_dir()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    assert_swept(tmp_path, child.pid, launcher, command)

def test_a_temporary_folder_refuses_a_purpose_that_is_not_a_word():
    with pytest.raises(ValueError, match="purpose='../x'"):
        processes.temporary_folder("../x")


@pytest.mark.process
def test_children_run_outside_the_parents_process_group():
    """Jupyter's interrupt signals the kernel's process group; the kit's children are not in it."""
    with WorkerProcess() as worker:
        for process in [psutil.Process(worker.pid), *psutil.Process(worker.pid).children()]:
            assert os.getpgid(process.pid) != os.getpgid(0)


def run_cell(client, code: str, timeout: float = 120) -> dict:
    """Runs `code` in the kernel; returns the reply's content and the text it printed."""
    outputs = []
    reply = client.execute_interactive(
        textwrap.dedent(code), timeout=timeout,
        output_hook=lambda msg: outputs.append(msg["content"].get("text", "")),
    )
    return {**reply["content"], "stdout": "".join(outputs)}


@pytest.mark.notebook
def test_interrupting_the_kernel_mid_round_keeps_workers_and_service_running():
    manager, client = start_new_kernel(kernel_name=KERNEL, startup_timeout=120)
    try:
        setup = run_cell(client, """
            import numpy as np, psutil, tensorflow as tf, tensorflow_federated as tff
            from tutorial_helpers import remote_data
            from tutorial_helpers.data_service import DataService

            class RangeBackend(remote_data.DataBackend):
                async def materialize(self, data, type_spec):
                    return tf.data.Dataset.range(int(data.uri.removeprefix("uri://")))

            SEQUENCE = tff.SequenceType(np.int64)

            @tff.tensorflow.computation(SEQUENCE)
            def count(dataset):
                return dataset.reduce(np.int64(0), lambda n, _: n + 1)

            @tff.federated_computation(tff.FederatedType(SEQUENCE, tff.CLIENTS))
            def count_per_client(datasets):
                return tff.federated_map(count, datasets)

            def round_of(n):
                return count_per_client(tff.framework.CreateDataDescriptor([f"uri://{n}"], SEQUENCE))

            service = DataService()
            ctx = remote_data.create_execution_context(RangeBackend())
            tff.framework.set_default_context(ctx)
            print(list(round_of(5)), ctx.worker.pid, service.pid)
        """)
        assert setup["status"] == "ok", setup
        first, worker_pid, service_pid = setup["stdout"].rsplit(maxsplit=2)
        assert first == "[5]"
        kit = [psutil.Process(int(worker_pid)), *psutil.Process(int(worker_pid)).children(),
               psutil.Process(int(service_pid))]

        # A round that takes far longer than we wait: the worker counts to 10^10.
        client.execute("round_of(10**10)")
        time.sleep(3)
        interrupted_at = time.monotonic()
        manager.interrupt_kernel()
        reply = client.get_shell_msg(timeout=30)["content"]
        stopped_after = time.monotonic() - interrupted_at
        assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
        assert stopped_after < 10
        assert all(process.is_running() for process in kit)

        # The same context runs the next round, and the service still answers.
        # After an error, ipykernel 7 aborts requests until a message it posts
        # to itself is handled; a request that wins that race comes back
        # "aborted" without running (seen once with TF_NUM_INTRAOP_THREADS=1).
        # Sending it again is what a learner does; it must then run.
        for _attempt in range(3):
            after = run_cell(client, """
                import urllib.request
                print(list(round_of(7)), urllib.request.urlopen(service.url + "/health").read().decode())
            """)
            if after["status"] != "aborted":
                break
            time.sleep(1)
        assert after["status"] == "ok", after
        assert after["stdout"].split() == ["[7]", "ok"]

        closed = run_cell(client, "ctx.close(); service.stop()")
        assert closed["status"] == "ok", closed
        psutil.wait_procs(kit, timeout=10)
        assert not any(process.is_running() for process in kit)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


@pytest.mark.process
def test_a_crashed_worker_program_is_reported_by_the_signal_that_killed_it():
    """Behind the launcher, the worker's own death still names the signal."""
    worker = WorkerProcess()
    try:
        binary = worker_binary_of(worker)
        binary.kill()
        worker._process.wait(timeout=10)
        with pytest.raises(RuntimeError, match=r"TFF worker \(pid \d+.*\) is not running: it was killed by SIGKILL"):
            worker.check_alive()
    finally:
        worker.stop()
    assert worker.socket_path is None or not os.path.exists(os.path.dirname(worker.socket_path))


@pytest.mark.parametrize("args, message", [
    (["--", "true"], "--parent=PID and a command"),
    (["--parent=1"], "--parent=PID and a command"),
    (["--parent=1", "--socket=/tmp/x", "--", "true"], "--socket and --port go together"),
    (["--parent=1", "--socket=/tmp/x", "--port=70000", "--", "true"], "--port must be within 1..65535"),
    (["--parent=1", "--user=1000:1000", "--", "true"], "--user needs --socket"),
    (["--parent=1", "--socket=/tmp/x", "--port=80", "--user=kit", "--", "true"], "--user must be UID:GID"),
    (["--parent=1", "--socket=/tmp/x", "--port=80", "--user=0:0", "--", "true"], "--user must be UID:GID"),
    (["--parent=1", "--netns-only", "--", "true"], "--netns-only needs --socket and root"),
])
@pytest.mark.process
def test_the_launcher_rejects_bad_arguments_by_name(args, message):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "tutorial_helpers.runtime.launcher", *args],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2 and message in result.stderr


def test_the_launcher_runs_a_command_as_another_user_only_for_root(monkeypatch, capsys):
    from tutorial_helpers.runtime import launcher

    monkeypatch.setattr(launcher.os, "geteuid", lambda: 1000)  # An ordinary user.
    with pytest.raises(SystemExit) as exit_info:
        launcher.main(["--parent=1", "--socket=/tmp/x", "--port=80", "--user=65534:65534", "--", "true"])
    assert exit_info.value.code == 2 and "--user needs root" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        launcher.main(["--parent=1", "--socket=/tmp/x", "--port=80", "--netns-only", "--", "true"])
    assert exit_info.value.code == 2 and "--netns-only needs --socket and root" in capsys.readouterr().err


def test_private_network_true_refuses_where_none_can_be_made_and_starts_nothing(monkeypatch):
    monkeypatch.setattr(processes, "private_network_status", lambda: (False, "simulated: denied"))
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(RuntimeError, match=r"private_network=True, but .*simulated: denied.*private_network=None"):
        WorkerProcess(private_network=True)
    assert {p.pid for p in psutil.Process().children(recursive=True)} == before


@pytest.mark.process
@pytest.mark.parametrize(("parent", "code"), [("os.getppid()", 0), ("os.getppid() + 10**6", 1)])
def test_a_child_whose_parent_is_already_gone_does_not_start(parent, code):
    """The launcher's check after asking for the parent-death signal: the parent it names is gone."""
    import subprocess

    script = f"import os; from tutorial_helpers.runtime.launcher import _die_with; _die_with({parent})"
    assert subprocess.run([sys.executable, "-c", script], timeout=60).returncode == code


def test_a_process_that_cannot_start_leaves_no_socket_folder_or_log(tmp_path, monkeypatch):
    import subprocess
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(launcher, "remove_orphans", lambda: [])

    def no_fork(*args, **kwargs):
        raise OSError(11, "Resource temporarily unavailable (simulated fork failure)")

    monkeypatch.setattr(subprocess, "Popen", no_fork)
    with pytest.raises(OSError, match="simulated fork failure"):
        processes.ManagedProcess(["true"], "test child", private_network=True, inner_port=1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.process
def test_wait_for_http_names_what_did_not_answer_in_time_and_a_child_that_exited():
    import socket

    with socket.socket() as probe:  # A loopback port that nothing listens on.
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/health"
    with processes.ManagedProcess([sys.executable, "-c", "import time; time.sleep(30)"], "silent child") as child:
        with pytest.raises(TimeoutError, match=r"silent child \(pid \d+\) did not answer within 1 s"):
            child.wait_for_http(url, timeout=1)
    quitter = processes.ManagedProcess([sys.executable, "-c", "raise SystemExit(4)"], "quitter")
    try:
        with pytest.raises(RuntimeError, match="exited with code 4"):
            quitter.wait_for_http(url, timeout=30)
    finally:
        quitter.stop()
