"""SiteContext: each round's clients at the worker of the site that holds them, merged on an aggregator."""

import os
import signal

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tests.conftest import worker_pids
from tutorial_helpers import expected_results, model
from tutorial_helpers.data import preprocess
from tutorial_helpers.multi_worker import create_multi_worker_context, worker_side_process
from tutorial_helpers.sites import (
    create_site_context,
    example_probes,
    read_catalogue,
    sample_clients,
    site_dataset_computation,
    write_site,
)
from tutorial_helpers.sites.audit import ChannelAudit
from tutorial_helpers.worker_process import WorkerProcess

ROUNDS = 3


@pytest.fixture(scope="module")
def setting(emnist):
    """Six writers held unevenly by three sites, and FedAvg that builds datasets in the workers."""
    train, _ = emnist
    ids = train.client_ids[:6]
    catalogue = {"hospital": ids[:3], "clinic": ids[3:5], "practice": ids[5:]}
    return ids, catalogue, worker_side_process(train, model.build_fed_avg())


def train(process, ids):
    """ROUNDS rounds in the current context; the model's weights after each, and the metrics."""
    state = process.initialize()
    weights, metrics = [], []
    for _ in range(ROUNDS):
        result = process.next(state, ids)
        state = result.state
        weights.append([np.asarray(w) for w in process.get_model_weights(state).trainable])
        metrics.append(result.metrics["client_work"]["train"])
    return weights, metrics


def largest_difference(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


@pytest.mark.process
def test_each_site_gets_only_its_clients_and_the_training_is_the_same(setting):
    ids, catalogue, process = setting
    with create_site_context(catalogue) as ctx:
        routed, routed_metrics = train(process, ids)
        sent = {site: worker.client_value_bytes for site, worker in ctx.sites.items()}
        pids = [worker.pid for worker in ctx.workers]
    assert len(pids) == 4 and not worker_pids() & set(pids)  # Three sites and the aggregator, all stopped.
    # What each site received was its own clients' ids: more ids, more bytes.
    assert sent["hospital"] > sent["clinic"] > sent["practice"] > 0, sent

    # The same grouping on one worker: the same arithmetic, so the same bits.
    with WorkerProcess() as one:
        with create_site_context(catalogue, site_workers=dict.fromkeys(catalogue, one), aggregator=one):
            grouped_on_one, _ = train(process, ids)
    for r in range(ROUNDS):
        assert largest_difference(routed[r], grouped_on_one[r]) == 0.0, f"round {r + 1}"

    # One plain worker: other sums, so rounding apart after round 1, which the original
    # tutorial's settings then amplify (notebook 06's appendix): the kit's check of one
    # against two workers applies, and every round saw the same examples.
    with create_multi_worker_context(1):
        plain, plain_metrics = train(process, ids)
    expected_results.check_workers_agree(plain_metrics, routed_metrics, plain, routed)
    assert [m["num_examples"] for m in routed_metrics] == [m["num_examples"] for m in plain_metrics]


@pytest.mark.process
def test_a_client_no_site_holds_is_refused_by_name_before_any_site_works(setting):
    ids, catalogue, process = setting
    with WorkerProcess() as one:
        sites = dict.fromkeys(catalogue, one)
        with create_site_context(catalogue, site_workers=sites, aggregator=one) as ctx:
            state = process.initialize()  # No client argument: the aggregator runs it.
            assert one.client_value_bytes == 0
            with pytest.raises(LookupError, match=r"Client 'f9999_99' is in no site's catalogue.*"
                                                  r"hospital \(3\), clinic \(2\), practice \(1\)"):
                process.next(state, [*ids[:2], "f9999_99"])
            assert one.client_value_bytes == 0  # Refused before any site was sent anything.
            assert "hospital: 3 clients" in repr(ctx)


@pytest.mark.process
def test_a_catalogue_must_give_each_client_one_site_and_each_site_a_worker():
    with WorkerProcess() as one:
        with pytest.raises(ValueError, match=r"'w1' is in the catalogues of both 'a' and 'b'"):
            create_site_context({"a": ["w1"], "b": ["w1"]}, site_workers={"a": one, "b": one}, aggregator=one)
        with pytest.raises(ValueError, match=r"sites without a worker: \['b'\]"):
            create_site_context({"a": ["w1"], "b": ["w2"]}, site_workers={"a": one}, aggregator=one)
        assert one.is_running()


@pytest.mark.process
def test_a_computation_with_results_at_the_clients_is_refused():
    @tff.tensorflow.computation(np.int32)
    def double(x):
        return x * 2

    @tff.federated_computation(tff.FederatedType(np.int32, tff.CLIENTS))
    def doubled(values):
        return tff.federated_map(double, values)

    with WorkerProcess() as one:
        with create_site_context({"a": ["0"]}, site_workers={"a": one}, aggregator=one):
            with pytest.raises(NotImplementedError, match="placed at the server"):
                doubled([1])


@pytest.fixture(scope="module")
def site_roots(emnist, setting, tmp_path_factory):
    """Each site's data in a root of its own (mode 0700), and its catalogue."""
    train, _ = emnist
    _, catalogue, _ = setting
    roots = {}
    for site, clients in catalogue.items():
        roots[site] = tmp_path_factory.mktemp(site)
        write_site(train, clients, roots[site], canary=f"canary of {site}".encode())
    return roots


def test_a_sites_files_hold_its_clients_examples_and_its_catalogue_only_counts(emnist, setting, site_roots):
    train, _ = emnist
    _, catalogue, _ = setting
    for site, root in site_roots.items():
        assert oct(root.stat().st_mode & 0o777) == "0o700"
        counts = read_catalogue(root)
        assert list(counts) == list(catalogue[site])
        assert sorted(p.name for p in (root / "clients").iterdir()) == sorted(f"{c}.tfrecord" for c in counts)
        for client, count in counts.items():
            assert count == len(list(train.create_tf_dataset_for_client(client)))
            assert f"canary of {site}".encode() in (root / "clients" / f"{client}.tfrecord").read_bytes()
        assert b"canary" not in (root / "catalogue.json").read_bytes()


@pytest.mark.process
def test_site_workers_read_their_own_roots_and_train_as_from_tffs_file(setting, site_roots):
    ids, catalogue, from_sqlite = setting
    site_process = tff.simulation.compose_dataset_computation_with_learning_process(
        site_dataset_computation(), model.build_fed_avg())
    workers = {site: WorkerProcess(cwd=root) for site, root in site_roots.items()}
    with create_site_context(catalogue, site_workers=workers) as ctx:
        from_sites, _ = train(site_process, ids)
    # The same examples, in the same order, as TFF's SQLite file gives: the same bits.
    with create_site_context(catalogue) as ctx:
        expected, _ = train(from_sqlite, ids)
    for r in range(ROUNDS):
        assert largest_difference(from_sites[r], expected[r]) == 0.0, f"round {r + 1}"
    assert not worker_pids() & {w.pid for w in ctx.workers}


@pytest.mark.process
def test_a_client_sent_to_a_site_that_does_not_hold_it_fails_there_by_name(setting, site_roots):
    ids, catalogue, _ = setting
    site_process = tff.simulation.compose_dataset_computation_with_learning_process(
        site_dataset_computation(), model.build_fed_avg())
    wrong = {"hospital": catalogue["hospital"][:2], "clinic": [catalogue["hospital"][2], *catalogue["clinic"]]}
    workers = {site: WorkerProcess(cwd=site_roots[site]) for site in wrong}
    with create_site_context(wrong, site_workers=workers):
        state = site_process.initialize()
        moved = catalogue["hospital"][2]
        with pytest.raises(RuntimeError, match=rf"(?s)Site 'clinic' .* failed its part of the round, for "
                                               rf"clients '{moved}', .*clients/{moved}\.tfrecord; No such file"):
            site_process.next(state, [*wrong["hospital"], *wrong["clinic"]])


@pytest.mark.process
def test_the_channel_audit_finds_nothing_in_training_and_catches_every_leak(emnist, setting, site_roots):
    """Every message to and from every worker is searched for every site's canary and example bytes.

    Training through the sites: nothing, in either direction. Three positive controls must be caught:
    a computation run at a site that reads a file of its data (the answer carries the canary); a
    controller that reads a site's records itself and ships them to a worker (the request does); and
    one that ships a client's preprocessed batches, as a data backend does (no canary: its pixels).
    """
    train_data, _ = emnist
    ids, catalogue, _ = setting
    canaries = tuple(f"canary of {site}".encode() for site in catalogue)
    probes = example_probes(train_data, ids)
    assert len(probes) == 2 * len(ids) and all(len(p) == 64 and p != b"\0\0\x80?" * 16 for p in probes)
    site_process = tff.simulation.compose_dataset_computation_with_learning_process(
        site_dataset_computation(), model.build_fed_avg())
    workers = {site: WorkerProcess(cwd=root, audit=ChannelAudit(canaries, probes))
               for site, root in site_roots.items()}
    aggregator = WorkerProcess(audit=ChannelAudit(canaries, probes))
    with create_site_context(catalogue, site_workers=workers, aggregator=aggregator) as ctx:
        train(site_process, ids)
        for site, worker in [*workers.items(), ("aggregator", aggregator)]:
            audit = worker.audit
            assert audit.found == [] and audit.canary_hits == audit.example_hits == 0, (site, audit.found)
            assert audit.calls > 0 and audit.bytes_sent > 0 and audit.bytes_received > 0, site

        @tff.tensorflow.computation(np.str_)
        def read_file(path):
            return tf.io.read_file(path)

        stolen = ctx.run_at_site("clinic", read_file, f"clients/{catalogue['clinic'][0]}.tfrecord")
        assert b"canary of clinic" in stolen
        assert ("received", "compute", b"canary of clinic") in workers["clinic"].audit.found
        assert workers["clinic"].audit.canary_hits == 1 and workers["clinic"].audit.example_hits >= 1

        records = [r.numpy() for r in tf.data.TFRecordDataset(str(site_roots["practice"] / "clients" /
                                                                   f"{catalogue['practice'][0]}.tfrecord"))]

        @tff.tensorflow.computation(tff.SequenceType(np.str_))
        def count(records):
            return records.reduce(np.int32(0), lambda n, _: n + 1)

        assert count(records) == len(records)  # No client argument: the aggregator runs it.
        assert ("sent", "create_value", b"canary of practice") in aggregator.audit.found

        # A backend's in-memory dataset (as notebook 05's) travels with its examples.
        examples = list(train_data.create_tf_dataset_for_client(catalogue["hospital"][1]).as_numpy_iterator())
        in_memory = tf.data.Dataset.from_tensor_slices(
            {"label": np.array([e["label"] for e in examples]), "pixels": np.stack([e["pixels"] for e in examples])})

        @tff.tensorflow.computation(model.DATASET_TYPE)
        def count_batches(dataset):
            return dataset.reduce(np.int32(0), lambda n, _: n + 1)

        canary_hits, before = aggregator.audit.canary_hits, len(aggregator.audit.found)
        assert count_batches(preprocess(in_memory)) > 0
        assert aggregator.audit.canary_hits == canary_hits  # No canary in parsed examples...
        new_hits = aggregator.audit.found[before:]
        assert {mark for _, _, mark in new_hits} == set(probes[2:4]), new_hits  # ...but their pixels.
        assert {direction for direction, _, _ in new_hits} == {"sent"}


def test_the_audit_refuses_marks_short_enough_to_be_found_by_chance():
    with pytest.raises(ValueError, match="at least 8 bytes"):
        ChannelAudit(canaries=(b"x",))
    with pytest.raises(ValueError, match="at least 8 bytes"):
        ChannelAudit(probes=(b"",))


class OnCompute(ChannelAudit):
    """An audit that, once `armed`, does `act()` to `victim` when the controller sends it a round's `compute`."""

    armed = False
    victim = None

    def record(self, direction, method, message):
        super().record(direction, method, message)
        if self.armed and direction == "sent" and method == "compute":
            self.armed = False
            self.act()

    def act(self) -> None:
        raise NotImplementedError


class KillOnCompute(OnCompute):
    """Kills `victim` (SIGKILL) mid-round."""

    def act(self) -> None:
        os.kill(self.victim.pid, signal.SIGKILL)


def kill_the_clinic_mid_round(process, catalogue, workers, audit, ids) -> list[int]:
    """Runs a round in which `audit` kills `audit.victim` when the clinic is sent its computation.

    The round must fail with an error naming the clinic and its clients; returns the pids of the
    context's workers (all stopped once it is closed).
    """
    with create_site_context(catalogue, site_workers=workers) as ctx:
        state = process.initialize()
        audit.armed = True
        clinic = ", ".join(repr(c) for c in catalogue["clinic"])
        with pytest.raises(RuntimeError, match=rf"Site 'clinic' .* failed its part of the round, for clients "
                                               rf"{clinic}: .*is not running: it was killed by SIGKILL"):
            process.next(state, ids)
        assert not audit.armed  # It was killed mid-round, not before.
        return [w.pid for w in ctx.workers]


@pytest.mark.process
def test_a_site_killed_mid_round_is_an_error_naming_it_and_its_clients(setting, site_roots):
    """The clinic's worker is killed when the controller sends it the round's computation."""
    ids, catalogue, _ = setting
    site_process = tff.simulation.compose_dataset_computation_with_learning_process(
        site_dataset_computation(), model.build_fed_avg())

    audit = KillOnCompute()
    workers = {site: WorkerProcess(cwd=root, audit=audit if site == "clinic" else None)
               for site, root in site_roots.items()}
    audit.victim = workers["clinic"]
    pids = kill_the_clinic_mid_round(site_process, catalogue, workers, audit, ids)
    assert not worker_pids() & set(pids)


@pytest.mark.process
def test_a_sites_unreadable_file_is_an_error_naming_the_site_and_the_path_in_its_root(setting, site_roots,
                                                                                       tmp_path):
    ids, catalogue, _ = setting
    roots = dict(site_roots, practice=tmp_path / "practice")
    with pytest.raises(FileNotFoundError, match=rf"Site 'practice' has no catalogue.json in its root {tmp_path}"):
        create_site_context(roots=roots)
    (roots["practice"] / "clients").mkdir(parents=True)
    client = catalogue["practice"][0]
    whole = (site_roots["practice"] / "clients" / f"{client}.tfrecord").read_bytes()
    (roots["practice"] / "clients" / f"{client}.tfrecord").write_bytes(whole[: len(whole) // 2])  # Cut short.
    (roots["practice"] / "catalogue.json").write_bytes((site_roots["practice"] / "catalogue.json").read_bytes())
    site_process = tff.simulation.compose_dataset_computation_with_learning_process(
        site_dataset_computation(), model.build_fed_avg())
    with create_site_context(roots=roots) as ctx:
        assert ctx.catalogue == {site: list(ids) for site, ids in catalogue.items()}
        # TensorFlow's own message says "truncated record" without the file; the context names it.
        with pytest.raises(RuntimeError, match=rf"(?s)Site 'practice' .* for clients '{client}' \(their data at "
                                               rf"that site: clients/{client}\.tfrecord, relative to its root\): "
                                               rf".*truncated record"):
            site_process.next(site_process.initialize(), ids)


@pytest.mark.process
def test_a_round_moves_the_same_bytes_whatever_a_client_holds(emnist, tmp_path):
    """One client's round, with its examples and with ten times as many: the traffic is the same."""
    train_data, _ = emnist
    client = train_data.client_ids[0]
    examples = list(train_data.create_tf_dataset_for_client(client).as_numpy_iterator())
    one = {"label": np.array([e["label"] for e in examples]), "pixels": np.stack([e["pixels"] for e in examples])}
    ten = {key: np.concatenate([value] * 10) for key, value in one.items()}
    process = tff.simulation.compose_dataset_computation_with_learning_process(
        site_dataset_computation(), model.build_fed_avg())
    moved = {}
    for name, arrays in (("as held", one), ("ten times", ten)):
        root = tmp_path / name
        counts = write_site(tff.simulation.datasets.TestClientData({client: arrays}), [client], root,
                            canary=b"canary")
        with create_site_context({"site": [client]},
                                 site_workers={"site": WorkerProcess(cwd=root, audit=ChannelAudit())},
                                 aggregator=WorkerProcess(audit=ChannelAudit())) as ctx:
            state = process.initialize()
            before = ctx.traffic()["site"]
            result = process.next(state, [client])
            after = ctx.traffic()["site"]
        moved[name] = (after[0] - before[0], after[1] - before[1])
        assert result.metrics["client_work"]["train"]["num_examples"] == counts[client] * 5  # 5 epochs.
    assert counts[client] == 10 * len(examples)
    # The same requests (the computation and the client's id; a few bytes of generated names
    # may differ) and the same answers (the model update and the metrics): no example moves.
    for direction in (0, 1):
        assert abs(moved["ten times"][direction] - moved["as held"][direction]) <= 64, moved
    # Ten times the examples would be over 300 KB more had they moved (784 floats each).
    assert len(examples) * 9 * 784 * 4 > 300_000


def test_sampling_a_round_draws_from_every_site_and_repeats_with_its_seed():
    catalogue = {"hospital": [f"h{i}" for i in range(60)], "clinic": [f"c{i}" for i in range(30)],
                 "practice": [f"p{i}" for i in range(10)]}
    rounds = [sample_clients(catalogue, 10, seed=round_num) for round_num in range(200)]
    assert all(len(set(r)) == 10 for r in rounds)
    assert rounds[3] == sample_clients(catalogue, 10, seed=3) and rounds[3] != rounds[4]
    drawn = [client[0] for r in rounds for client in r]
    shares = {site[0]: drawn.count(site[0]) / len(drawn) for site in catalogue}
    assert abs(shares["h"] - 0.6) < 0.05 and abs(shares["c"] - 0.3) < 0.05 and abs(shares["p"] - 0.1) < 0.03
    with pytest.raises(ValueError, match="between 1 and the 100 clients"):
        sample_clients(catalogue, 101)


SITE_USERS = {"hospital": "kit-site-hospital", "clinic": "kit-site-clinic", "practice": "kit-site-practice"}


@pytest.fixture(scope="module")
def site_users():
    """A user account per site (root only), removed afterwards if the test made it."""
    import pwd
    import shutil
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("needs root to run each site's worker as a user of its own; as an ordinary user the "
                    "sites run as that user (notebook 07 says what that does not keep apart)")
    for tool in ("useradd", "setpriv", "pkill"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} to make and use the sites' users")
    made = []
    for name in SITE_USERS.values():
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                           check=True, capture_output=True, timeout=60)
            made.append(name)
    try:
        yield SITE_USERS
    finally:
        for name in SITE_USERS.values():
            subprocess.run(["pkill", "-KILL", "-u", name], check=False)
        for name in made:
            subprocess.run(["userdel", name], check=False, capture_output=True, timeout=60)


@pytest.mark.root
def test_sites_as_users_of_their_own_read_only_their_own_data(emnist, setting, site_users, tmp_path):
    """Each site's root belongs to its user (0700), and its worker runs as that user.

    Training works; a site's worker cannot read another site's files; and neither can another
    user, nor root without the capabilities that override file permissions (a controller that is
    not allowed everything).
    """
    import subprocess

    import psutil

    train_data, _ = emnist
    ids, catalogue, _ = setting
    tmp_path.chmod(0o755)  # The sites' users must reach their roots (each root itself stays 0700).
    roots = {site: tmp_path / site for site in catalogue}
    for site, clients in catalogue.items():
        write_site(train_data, clients, roots[site], canary=f"canary of {site}".encode(), owner=site_users[site])
    site_process = tff.simulation.compose_dataset_computation_with_learning_process(
        site_dataset_computation(), model.build_fed_avg())
    with create_site_context(roots=roots, users=site_users) as ctx:
        for site, worker in ctx.sites.items():
            workers = psutil.Process(worker.pid).children(recursive=True)
            assert [p.username() for p in workers] == [site_users[site]], site
            assert workers[0].cwd() == str(roots[site])
        result = site_process.next(site_process.initialize(), ids)
        assert result.metrics["client_work"]["train"]["num_examples"] > 0

        @tff.tensorflow.computation(np.str_)
        def read_file(path):
            return tf.io.read_file(path)

        own = f"clients/{catalogue['clinic'][0]}.tfrecord"
        assert b"canary of clinic" in ctx.run_at_site("clinic", read_file, own)
        other = f"../hospital/clients/{catalogue['hospital'][0]}.tfrecord"
        with pytest.raises(Exception, match="Permission denied"):
            ctx.run_at_site("clinic", read_file, other)

    a_file = roots["hospital"] / "clients" / f"{catalogue['hospital'][0]}.tfrecord"
    assert oct(roots["hospital"].stat().st_mode & 0o777) == "0o700" and a_file.stat().st_uid != 0
    nobody = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", str(a_file)],
                            capture_output=True, text=True, check=False)
    assert nobody.returncode != 0 and "Permission denied" in nobody.stderr
    root_without_override = subprocess.run(
        ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", "cat", str(a_file)],
        capture_output=True, text=True, check=False)
    assert root_without_override.returncode != 0 and "Permission denied" in root_without_override.stderr
    assert not worker_pids() & {w.pid for w in ctx.workers}


@pytest.mark.root
def test_behind_a_gatekeeper_the_site_user_runs_the_worker_and_cannot_touch_the_gatekeepers_files(
        emnist, setting, site_users, tmp_path):
    """The gatekeeper runs as root (the site's administrator), in the site's network namespace; the worker
    as the site's user, in its root. Training works, and the worker's user cannot change the audit log."""
    import pwd
    import subprocess

    import psutil

    from tutorial_helpers.sites import build_site_fed_avg, fed_avg_computations
    from tutorial_helpers.sites.gatekeeper import AUDIT_LOG, Gatekeeper, approve, read_audit_log

    train_data, _ = emnist
    ids, catalogue, _ = setting
    tmp_path.chmod(0o755)
    roots = {site: tmp_path / site for site in catalogue}
    for site, clients in catalogue.items():
        write_site(train_data, clients, roots[site], canary=f"canary of {site}".encode(), owner=site_users[site])
    approve(tmp_path / "clinic-gatekeeper", fed_avg_computations())
    folders = {site: tmp_path / f"{site}-gatekeeper" for site in catalogue}
    for site, folder in folders.items():
        if site != "clinic":
            folder.mkdir(mode=0o700)
            (folder / "approved.txt").write_bytes((folders["clinic"] / "approved.txt").read_bytes())
    keepers = {site: Gatekeeper(folder) for site, folder in folders.items()}
    process = build_site_fed_avg()
    with create_site_context(roots=roots, users=site_users, gatekeepers=keepers) as ctx:
        for site, worker in ctx.sites.items():
            (keeper,) = psutil.Process(worker.pid).children()
            (binary,) = keeper.children()
            assert keeper.username() == "root" and binary.username() == site_users[site], site
            assert binary.cwd() == str(roots[site])
        result = process.next(process.initialize(), ids)
        assert result.metrics["client_work"]["train"]["num_examples"] > 0
    clinic = pwd.getpwnam(site_users["clinic"])
    log = folders["clinic"] / AUDIT_LOG
    calls = read_audit_log(folders["clinic"])
    assert "Compute" in [c["call"] for c in calls if c["verdict"] == "forwarded"]  # The round's answer left.
    tamper = subprocess.run(["setpriv", f"--reuid={clinic.pw_uid}", f"--regid={clinic.pw_gid}", "--clear-groups",
                             "sh", "-c", f"echo forged >> {log}"], capture_output=True, text=True, check=False)
    assert tamper.returncode != 0 and "Permission denied" in tamper.stderr
    assert read_audit_log(folders["clinic"]) == calls and "forged" not in log.read_text()
    assert not worker_pids() & {w.pid for w in ctx.workers}


def test_a_site_user_is_refused_clearly_where_it_cannot_be_used():
    from tutorial_helpers.worker_process import WorkerProcess as Worker

    if os.geteuid() != 0:
        with pytest.raises(PermissionError, match="only root can start a worker as another user"):
            Worker(user="nobody")
        return
    with pytest.raises(LookupError, match="no such user on this machine"):
        Worker(user="kit-no-such-site-user")
    with pytest.raises(ValueError, match="is root"):
        Worker(user="root")
    with pytest.raises(ValueError, match="needs a contained worker"):
        Worker(user="nobody", private_network=False)


@pytest.mark.process
def test_a_round_goes_on_without_a_site_that_leaves_and_uses_it_again_when_it_comes_back(setting, site_roots):
    """min_sites=2: the clinic's worker is killed mid-round; the round completes with the other sites.

    Its result is exactly that of a round without the clinic's clients; the next round drops the clinic
    again at once; a new worker for the clinic (`replace_site`) takes part in the round after.
    """
    ids, catalogue, _ = setting
    site_process = tff.simulation.compose_dataset_computation_with_learning_process(
        site_dataset_computation(), model.build_fed_avg())

    audit = KillOnCompute()
    workers = {site: WorkerProcess(cwd=root, audit=audit if site == "clinic" else None)
               for site, root in site_roots.items()}
    audit.victim = workers["clinic"]
    with create_site_context(catalogue, site_workers=workers, min_sites=2) as ctx:
        state = site_process.initialize()
        audit.armed = True
        survived = site_process.next(state, ids)
        assert not audit.armed
        assert list(ctx.last_round.dropped) == ["clinic"] and ctx.last_round.sites == list(catalogue)
        clients, reason = ctx.last_round.dropped["clinic"]
        assert clients == catalogue["clinic"] and "killed by SIGKILL" in reason
        assert ctx.last_round.dropped_clients == catalogue["clinic"]

        again = site_process.next(survived.state, ids)  # The clinic is still gone: dropped at once.
        assert list(ctx.last_round.dropped) == ["clinic"] and "is not running" in ctx.last_round.dropped["clinic"][1]

        ctx.replace_site("clinic", WorkerProcess(cwd=site_roots["clinic"]))
        back = site_process.next(again.state, ids)
        assert ctx.last_round.dropped == {} and ctx.last_round.sites == list(catalogue)
        pids = [w.pid for w in ctx.workers] + [workers["clinic"].pid]

    # The same round, without the clinic's clients, on sites that all answer: the same bits.
    others = [client for client in ids if client not in catalogue["clinic"]]
    with create_site_context(catalogue, roots=site_roots):
        without = site_process.next(state, others)
    assert survived.metrics == without.metrics
    for a, b in zip(tff.structure.flatten(survived.state), tff.structure.flatten(without.state), strict=True):
        np.testing.assert_array_equal(a, b)
    examples = back.metrics["client_work"]["train"]["num_examples"]
    assert survived.metrics["client_work"]["train"]["num_examples"] < examples
    assert not worker_pids() & set(pids)


class FreezeOnCompute(OnCompute):
    """Freezes `victim`'s worker_binary (SIGSTOP) mid-round; `frozen` is that process."""

    frozen = None

    def act(self) -> None:
        import psutil

        (self.frozen,) = [p for p in psutil.Process(self.victim.pid).children(recursive=True)
                          if p.name() == "worker_binary"]
        self.frozen.suspend()


@pytest.mark.process
def test_a_site_that_stops_answering_is_dropped_after_its_timeout_and_used_again_when_it_answers(
        setting, site_roots):
    """The clinic's worker freezes mid-round: the round waits its call_timeout, then goes on without it.

    The next round asks the clinic first (sites.PING_TIMEOUT) and drops it at once; once the worker
    runs again, the clinic answers that question and takes part again, without replace_site.
    """
    import time

    from tutorial_helpers.sites import PING_TIMEOUT

    ids, catalogue, _ = setting
    site_process = tff.simulation.compose_dataset_computation_with_learning_process(
        site_dataset_computation(), model.build_fed_avg())
    audit = FreezeOnCompute()
    workers = {site: WorkerProcess(cwd=root, call_timeout=20, audit=audit if site == "clinic" else None)
               for site, root in site_roots.items()}
    audit.victim = workers["clinic"]
    others = [client for client in ids if client not in catalogue["clinic"]]
    with create_site_context(catalogue, site_workers=workers, min_sites=2) as ctx:
        state = site_process.initialize()
        audit.armed = True
        started = time.monotonic()
        survived = site_process.next(state, ids)
        waited = time.monotonic() - started
        assert audit.frozen is not None and waited >= 20
        # No longer than it had to: the clinic's computation, then a short call to dispose of its executor
        # (_QUICK_CALL_SECONDS), not a second call_timeout; the rest of the round trains in under 10 s.
        assert waited < 20 + 5 + 10
        clients, reason = ctx.last_round.dropped["clinic"]
        assert list(ctx.last_round.dropped) == ["clinic"] and clients == catalogue["clinic"]
        assert "did not answer within 20 s" in reason and ctx.absent.keys() == {"clinic"}

        started = time.monotonic()
        again = site_process.next(survived.state, ids)
        assert time.monotonic() - started < waited  # Asked for PING_TIMEOUT s, not another call_timeout.
        assert "does not answer yet" in ctx.last_round.dropped["clinic"][1]
        assert ctx.last_round.returned == []

        audit.frozen.resume()
        back = site_process.next(again.state, ids)
        assert ctx.last_round.dropped == {} and ctx.last_round.returned == ["clinic"] and not ctx.absent
        pids = [w.pid for w in ctx.workers]

    with create_site_context(catalogue, roots=site_roots):
        without = site_process.next(state, others)
    assert survived.metrics == without.metrics  # The frozen site's clients are left out, nothing else.
    assert back.metrics["client_work"]["train"]["num_examples"] > again.metrics["client_work"]["train"]["num_examples"]
    assert PING_TIMEOUT < 20
    assert not worker_pids() & set(pids)


@pytest.mark.process
def test_below_min_sites_the_round_fails_naming_every_site_that_did_not_answer(setting, site_roots):
    ids, catalogue, _ = setting
    site_process = tff.simulation.compose_dataset_computation_with_learning_process(
        site_dataset_computation(), model.build_fed_avg())
    with pytest.raises(ValueError, match="min_sites must be between 1 and the 3 sites"):
        create_site_context(catalogue, roots=site_roots, min_sites=4)
    with create_site_context(catalogue, roots=site_roots, min_sites=2) as ctx:
        state = site_process.initialize()
        for site in ("clinic", "practice"):
            ctx.sites[site].stop()
        with pytest.raises(RuntimeError, match=r"(?s)Only 1 of the round's 3 sites answered, fewer than "
                                               r"min_sites=2: Site 'clinic' .*Site 'practice' "):
            site_process.next(state, ids)
        assert set(ctx.last_round.dropped) == {"clinic", "practice"}


def test_a_round_is_planned_from_the_catalogue_alone():
    """`plan_round` and `site_specs`: what each site will be asked, decided without any worker."""
    from tutorial_helpers.sites import SiteSpec, plan_round, site_specs

    catalogue = {"hospital": ["a", "b", "c"], "clinic": ["d"], "practice": ["e", "f"]}
    assert plan_round(catalogue, ["f", "a", "e", "c"]) == {"hospital": [1, 3], "practice": [0, 2]}
    assert plan_round(catalogue, ["d", "d"]) == {"clinic": [0, 1]}
    with pytest.raises(LookupError, match=r"Client 'z' is in no site's catalogue.*hospital \(3\), clinic \(1\)"):
        plan_round(catalogue, ["a", "z"])
    with pytest.raises(ValueError, match="'a' is in the catalogues of both 'hospital' and 'clinic'"):
        plan_round({**catalogue, "clinic": ["a"]}, ["a"])
    specs = site_specs(catalogue, users={"clinic": "kit-clinic"})
    assert specs["clinic"] == SiteSpec(user="kit-clinic") and specs["hospital"] == SiteSpec()
    with pytest.raises(ValueError, match=r"users names sites that are not in the catalogue: \['lab'\]"):
        site_specs(catalogue, users={"lab": "kit-lab"})
    with pytest.raises(ValueError, match="tls= needs a gatekeeper for every site"):
        site_specs(catalogue, tls="workshop")
