"""A site's gatekeeper: only approved computations reach its worker; answers capped; every call logged."""

import collections
import subprocess
import sys

import numpy as np
import psutil
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tests.conftest import worker_pids
from tests.test_sites import (
    ROUNDS,
    KillOnCompute,
    kill_the_clinic_mid_round,
    largest_difference,
    train,
)
from tutorial_helpers import model
from tutorial_helpers.data import preprocess
from tutorial_helpers.multi_worker import create_multi_worker_context
from tutorial_helpers.sites import (
    build_site_fed_avg,
    create_site_context,
    fed_avg_computations,
    gatekeeper,
    site_dataset_computation,
    write_site,
)
from tutorial_helpers.sites.gatekeeper import (
    AuditLog,
    Gatekeeper,
    approve,
    fingerprint,
    read_approvals,
    read_audit_log,
    site_part,
)
from tutorial_helpers.sites.worker import SiteWorker
from tutorial_helpers.worker_process import WorkerProcess


@pytest.fixture(scope="module")
def sites(emnist, tmp_path_factory):
    """Three sites' data roots (six writers, held 3/2/1), and a gatekeeper folder each, FedAvg approved."""
    train_data, _ = emnist
    ids = train_data.client_ids[:6]
    catalogue = {"hospital": ids[:3], "clinic": ids[3:5], "practice": ids[5:]}
    base = tmp_path_factory.mktemp("gated")
    roots, folders = {}, {}
    for site, clients in catalogue.items():
        roots[site] = base / site
        write_site(train_data, clients, roots[site], canary=f"canary of {site}".encode())
        folders[site] = base / f"{site}-gatekeeper"
    approve(folders["hospital"], fed_avg_computations())
    for site in ("clinic", "practice"):  # The same list: one compile is enough.
        folders[site].mkdir(mode=0o700)
        (folders[site] / gatekeeper.APPROVALS).write_bytes((folders["hospital"] / gatekeeper.APPROVALS).read_bytes())
    return ids, catalogue, roots, folders


def gatekeepers(folders, **settings):
    return {site: Gatekeeper(folder, **settings) for site, folder in folders.items()}


def refusals(folder) -> list[dict]:
    return [call for call in read_audit_log(folder) if call["verdict"] == "refused"]


@pytest.mark.process
def test_an_approved_round_trains_exactly_as_without_the_gatekeeper_and_every_call_is_logged(sites):
    ids, catalogue, roots, folders = sites
    process = build_site_fed_avg()
    with create_site_context(roots=roots) as plain:
        expected, expected_metrics = train(process, ids)
    approved = read_approvals(folders["hospital"])
    with create_site_context(roots=roots, gatekeepers=gatekeepers(folders)) as ctx:
        gated, gated_metrics = train(process, ids)
        pids = [worker.pid for worker in ctx.workers]
    assert not worker_pids() & set(pids)
    assert gated_metrics == expected_metrics
    for r in range(ROUNDS):
        assert largest_difference(gated[r], expected[r]) == 0.0, f"round {r + 1}"
    assert not worker_pids() & {worker.pid for worker in plain.workers}

    for site, folder in folders.items():
        calls = read_audit_log(folder)
        assert {c["verdict"] for c in calls} == {"forwarded"}, site
        sent = [c["detail"].split()[0].removeprefix("computation=") for c in calls if c["detail"]]
        assert len(sent) == ROUNDS and set(sent) <= set(approved), (site, sent)
        answers = [int(c["out"]) for c in calls if c["call"] == "Compute"]
        assert len(answers) == ROUNDS and all(31_400 < n < 34_000 for n in answers), answers  # The model, and a little.
        lines = (folder / gatekeeper.AUDIT_LOG).read_text().splitlines()
        assert "gatekeeper started for site" in lines[0] and "stopped by the kit" in lines[-1]


@pytest.fixture
def gated(sites):
    """The three sites behind their gatekeepers, for one test."""
    _, _, roots, folders = sites
    with create_site_context(roots=roots, gatekeepers=gatekeepers(folders)) as ctx:
        yield ctx
    assert not worker_pids() & {worker.pid for worker in ctx.workers}


@pytest.mark.process
def test_a_computation_the_site_did_not_approve_never_reaches_its_worker_and_is_logged(sites, gated):
    _, catalogue, roots, folders = sites

    @tff.tensorflow.computation(np.str_)
    def read_file(path):
        return tf.io.read_file(path)

    @tff.tensorflow.computation(np.str_)
    def leave_a_mark(path):
        with tf.control_dependencies([tf.io.write_file(path, "the controller was here")]):
            return tf.constant(1)

    before = refusals(folders["clinic"])
    with pytest.raises(PermissionError, match=r"Site 'clinic' refused computation [0-9a-f]{64}: it is not on the "
                                              r"site's approval list \(approved.txt\)"):
        gated.run_at_site("clinic", read_file, f"clients/{catalogue['clinic'][0]}.tfrecord")
    with pytest.raises(PermissionError, match="Site 'clinic' refused computation"):
        gated.run_at_site("clinic", leave_a_mark, "mark.txt")
    assert not (roots["clinic"] / "mark.txt").exists()  # The worker never ran it.
    assert gated.audits()["clinic"].canary_hits == 0
    refused = refusals(folders["clinic"])[len(before):]
    assert len(refused) == 2 and all(c["call"] == "CreateValue" for c in refused)
    expected = fingerprint(tff.backends.native.desugar_and_transform_to_native(read_file))
    assert f"refused computation {expected}:" in refused[0]["detail"]


@pytest.mark.process
def test_a_changed_model_is_refused_at_every_site_with_its_fingerprint(sites, gated):
    ids, _, _, _ = sites

    def two_layers():
        keras = tf.keras.models.Sequential([
            tf.keras.layers.InputLayer(input_shape=(784,)),
            tf.keras.layers.Dense(16, kernel_initializer="zeros"),
            tf.keras.layers.Dense(10, kernel_initializer="zeros"),
            tf.keras.layers.Softmax(),
        ])
        return tff.learning.models.from_keras_model(keras, input_spec=model.INPUT_SPEC,
                                                    loss=tf.keras.losses.SparseCategoricalCrossentropy())

    other = tff.simulation.compose_dataset_computation_with_learning_process(
        site_dataset_computation(), tff.learning.algorithms.build_weighted_fed_avg(
            two_layers, client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.02)))
    expected = fingerprint(site_part(other.next))
    _, _, roots, folders = sites
    before = {site: len(refusals(folder)) for site, folder in folders.items()}
    with create_site_context(roots=roots, gatekeepers=gatekeepers(folders), min_sites=1):  # Every site tries.
        with pytest.raises(RuntimeError, match=rf"(?s)Only 0 of the round's 3 sites answered.*Site 'hospital' "
                                               rf"refused computation {expected}"):
            other.next(other.initialize(), ids)
    for site, folder in folders.items():
        (refused,) = refusals(folder)[before[site]:]
        assert expected in refused["detail"], site


@pytest.mark.process
def test_what_changes_a_fingerprint_and_what_does_not():
    """The model and the data loading are in the computation; TFF's optimizers keep learning rates in the state."""
    base = fingerprint(site_part(build_site_fed_avg().next))
    no_shuffle = tff.simulation.compose_dataset_computation_with_learning_process(
        site_dataset_computation(lambda d: preprocess(d).take(5)), model.build_fed_avg())
    assert fingerprint(site_part(no_shuffle.next)) != base
    # A learning rate arrives as a value (state.client_work.learning_rate), not in the computation:
    # a fingerprint cannot tell 0.02 from 0.05. The site sees it in the log's bytes, not its fingerprint.
    assert fingerprint(site_part(build_site_fed_avg(client_learning_rate=0.05).next)) == base
    with create_multi_worker_context(1):  # The kit's worker, stopped after the block (not TFF's default one).
        states = [build_site_fed_avg(client_learning_rate=rate).initialize() for rate in (0.02, 0.05)]
    assert [float(state.client_work["learning_rate"]) for state in states] == pytest.approx([0.02, 0.05])


@pytest.mark.process
def test_a_fingerprint_is_the_same_in_a_fresh_process_and_after_other_traces(sites, tmp_path):
    """The approve command in a new Python process: the same fingerprints as this process's (which traced
    hundreds of functions before, so TensorFlow's counters differ)."""
    _, _, _, folders = sites
    command = [sys.executable, "-m", "tutorial_helpers.gatekeeper", "approve", str(tmp_path / "fresh"),
               "tutorial_helpers.sites:fed_avg_computations"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("approved ") == 2 and "2 added" in result.stdout
    assert read_approvals(tmp_path / "fresh") == read_approvals(folders["hospital"])
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert "0 added; 2 on" in again.stdout  # Approving twice adds nothing.
    assert len(read_approvals(tmp_path / "fresh")) == 2


def test_the_approval_list_is_the_sites_to_read_and_edit(tmp_path):
    folder = tmp_path / "gk"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match=r"The gatekeeper's folder .*nowhere of site 'clinic' does not exist"):
        Gatekeeper(tmp_path / "nowhere", site="clinic")
    (folder / gatekeeper.APPROVALS).write_text("# approved\n" + "ab" * 32 + " training\nnot a fingerprint here\n")
    with pytest.raises(ValueError, match=r"approved.txt, line 3: 'not a fingerprint here' does not start with a "
                                         r"fingerprint"):
        Gatekeeper(folder, site="clinic")
    (folder / gatekeeper.APPROVALS).write_text("# approved\n" + "ab" * 32 + " training\n\n")
    assert read_approvals(folder) == {"ab" * 32: "training"}
    with pytest.raises(ValueError, match="max_result_bytes must be a positive number"):
        Gatekeeper(folder, max_result_bytes=0)
    with pytest.raises(ValueError, match="needs a contained worker"):
        SiteWorker(Gatekeeper(folder), private_network=False)


@pytest.mark.process
def test_a_dataset_sent_to_a_site_is_refused_even_with_an_approved_computation(sites, tmp_path):
    _, _, roots, folders = sites

    @tff.tensorflow.computation(tff.SequenceType(np.int32))
    def total(numbers):
        return numbers.reduce(np.int32(0), lambda a, b: a + b)

    folder = tmp_path / "practice-gatekeeper"
    folder.mkdir()
    (folder / gatekeeper.APPROVALS).write_text(
        fingerprint(tff.backends.native.desugar_and_transform_to_native(total)) + " a sum, for this test\n")
    with create_site_context(roots={"practice": roots["practice"]},
                             gatekeepers={"practice": Gatekeeper(folder)}) as ctx:
        with pytest.raises(PermissionError, match="Site 'practice' refused a dataset sent to it: a site loads "
                                                  "its own data"):
            ctx.run_at_site("practice", total, [1, 2, 3])
    (refused,) = refusals(folder)
    assert refused["call"] == "CreateValue" and "refused a dataset" in refused["detail"]


@pytest.mark.process
def test_an_answer_over_the_sites_limit_is_refused_and_logged(sites):
    ids, catalogue, roots, folders = sites
    process = build_site_fed_avg()
    before = refusals(folders["practice"])
    with create_site_context(roots={"practice": roots["practice"]}, min_sites=None,
                             gatekeepers={"practice": Gatekeeper(folders["practice"], max_result_bytes=20_000)}):
        with pytest.raises(PermissionError, match=r"Site 'practice' refused to send back a result of 3\d,\d{3} "
                                                  rf"bytes: its limit is 20,000 bytes. \(clients '{ids[5]}'\)"):
            process.next(process.initialize(), catalogue["practice"])
    assert [c["call"] for c in refusals(folders["practice"])[len(before):]] == ["Compute"]


@pytest.mark.process
def test_the_gatekeeper_runs_without_tensorflow_and_only_appends_to_its_log(sites):
    _, _, roots, folders = sites
    log = folders["clinic"] / gatekeeper.AUDIT_LOG
    before = log.read_text() if log.exists() else ""
    with create_site_context(roots=roots, gatekeepers=gatekeepers(folders)) as ctx:
        for site, worker in ctx.sites.items():
            (keeper,) = psutil.Process(worker.pid).children()
            assert "tutorial_helpers.sites.gatekeeper" in " ".join(keeper.cmdline())
            assert [p.name() for p in keeper.children()] == ["worker_binary"]
            libraries = {m.path.rsplit("/", 1)[-1] for m in keeper.memory_maps()}
            assert not any("tensorflow" in name for name in libraries), (site, sorted(libraries))
            assert keeper.memory_info().rss < 200 * 2**20, site
    first = log.read_text()
    with create_site_context(roots=roots, gatekeepers=gatekeepers(folders)):
        pass
    second = log.read_text()
    assert first.startswith(before) and second.startswith(first)  # Only ever appended.
    starts = [text.count("gatekeeper started for site 'clinic'") for text in (before, first, second)]
    assert starts[2] == starts[1] + 1 == starts[0] + 2, starts


class _Pid(collections.namedtuple("_Pid", "pid")):
    """What KillOnCompute needs of its victim."""


@pytest.mark.process
def test_a_site_killed_behind_its_gatekeeper_is_an_error_naming_it_and_nothing_is_left(sites):
    ids, catalogue, roots, folders = sites
    process = build_site_fed_avg()
    audit = KillOnCompute()
    workers = {site: SiteWorker(Gatekeeper(folders[site], site=site), cwd=root,
                                audit=audit if site == "clinic" else None)
               for site, root in roots.items()}
    (keeper,) = psutil.Process(workers["clinic"].pid).children()
    (binary,) = keeper.children()
    audit.victim = _Pid(binary.pid)
    pids = kill_the_clinic_mid_round(process, catalogue, workers, audit, ids)
    assert not worker_pids() & set(pids)
    assert not psutil.pid_exists(keeper.pid) and not psutil.pid_exists(binary.pid)
    last = (folders["clinic"] / gatekeeper.AUDIT_LOG).read_text().splitlines()[-1]
    assert last.endswith("gatekeeper stopped for site 'clinic': worker ended with code -9"), last


def _policy(folder, approvals: dict[str, str], pins: str = ""):
    """A site's policy folder with these approvals (and pins.txt text), as the gatekeeper reads it."""
    from tutorial_helpers.sites.gatekeeper.policy import Policy

    folder.mkdir(exist_ok=True)
    (folder / gatekeeper.APPROVALS).write_text("".join(f"{f} {d}\n" for f, d in approvals.items()))
    if pins:
        (folder / gatekeeper.PINS).write_text(pins)
    return Policy(folder)


def _create_value(value) -> bytes:
    from tensorflow_federated.proto.v0 import executor_pb2

    return executor_pb2.CreateValueRequest(executor=executor_pb2.ExecutorId(id="e"), value=value).SerializeToString()


def test_the_incoming_checks_refuse_what_is_nested_reused_or_a_dataset_and_the_log_keeps_one_line(tmp_path):
    """Without a worker: what the gatekeeper's incoming checks refuse in a request, and its log's lines."""
    from tensorflow_federated.proto.v0 import computation_pb2, executor_pb2

    from tutorial_helpers.sites.gatekeeper.audit_log import AuditLog
    from tutorial_helpers.sites.gatekeeper.checks import (
        ApprovedComputations,
        Call,
        NoDatasetsFromOutside,
        Refused,
    )
    from tutorial_helpers.sites.gatekeeper.fingerprints import Fingerprints

    def proto(computation):
        native = tff.backends.native.desugar_and_transform_to_native(computation)
        return type(native).get_proto(native)

    @tff.tensorflow.computation(np.int32)
    def add_one(x):
        return x + 1

    @tff.tensorflow.computation(np.int32)
    def double(x):
        return x * 2

    approved = {fingerprint(proto(add_one)): "add one", fingerprint(proto(double)): "double"}
    approvals = ApprovedComputations(_policy(tmp_path / "policy", approved), Fingerprints())
    no_datasets = NoDatasetsFromOutside()

    def check(value) -> list[str]:
        call = Call("clinic", "CreateValue", _create_value(value))
        no_datasets.check(call)
        approvals.check(call)
        return call.notes

    value = executor_pb2.Value()
    value.struct.element.add().value.computation.CopyFrom(proto(add_one))
    assert check(value) == [f"computation={fingerprint(proto(add_one))} (add one)"]
    value.struct.element.add().value.federated.value.add().computation.CopyFrom(proto(read_file_computation()))
    with pytest.raises(Refused, match="Site 'clinic' refused computation"):
        check(value)  # An unapproved computation two levels down.
    value = executor_pb2.Value()
    value.federated.value.add().struct.element.add().value.sequence.serialized_graph_def = b"a dataset"
    with pytest.raises(Refused, match="refused a dataset"):
        check(value)  # A dataset two levels down.

    # The worker keeps compiled TensorFlow by cache key alone: a key cannot come back with another graph.
    first, second = computation_pb2.Computation(), computation_pb2.Computation()
    first.CopyFrom(proto(add_one))
    second.CopyFrom(proto(double))
    first.tensorflow.cache_key.id = second.tensorflow.cache_key.id = 7
    assert check(executor_pb2.Value(computation=first)) == [f"computation={fingerprint(proto(add_one))} (add one)"]
    with pytest.raises(Refused, match="cache key that this worker already holds for another one"):
        check(executor_pb2.Value(computation=second))
    assert fingerprint(second) == fingerprint(proto(double))  # The fingerprint itself ignores the key.

    log = AuditLog(tmp_path / gatekeeper.AUDIT_LOG)
    try:
        log.write("CreateValue in=1 out=0 verdict=error -- the worker said:\n2026-01-01T00:00:00Z Compute "
                  "in=1 out=1 verdict=forwarded")
    finally:
        log.close()
    lines = (tmp_path / gatekeeper.AUDIT_LOG).read_text().splitlines()
    assert len(lines) == 1 and "\\n2026" in lines[0]
    assert [c["verdict"] for c in read_audit_log(tmp_path)] == ["error"]


def test_the_gate_serves_every_call_of_tffs_executor_service_and_refuses_one_not_reviewed():
    """The calls come from TFF's own service descriptor. If TFF adds one, this fails: review what it does,
    then add it to REVIEWED_METHODS (until then the gatekeeper refuses it)."""
    from tutorial_helpers.sites.gatekeeper.checks import (
        REVIEWED_METHODS,
        Call,
        Refused,
        ReviewedMethodsOnly,
        executor_methods,
    )

    assert set(executor_methods()) == REVIEWED_METHODS
    ReviewedMethodsOnly().check(Call("clinic", "Compute", b""))
    with pytest.raises(Refused, match="Site 'clinic' refused a StreamValues call: its gatekeeper does not know"):
        ReviewedMethodsOnly().check(Call("clinic", "StreamValues", b""))


def test_a_withdrawn_approval_or_a_new_pin_holds_from_the_next_call_and_a_broken_list_refuses_all(tmp_path):
    """The policy is read again when its files change: no restart. A file that does not read fails closed."""
    from tensorflow_federated.proto.v0 import executor_pb2

    from tutorial_helpers.sites.gatekeeper.checks import ApprovedComputations, Call, Refused
    from tutorial_helpers.sites.gatekeeper.fingerprints import Fingerprints

    @tff.tensorflow.computation(np.int32)
    def add_one(x):
        return x + 1

    native = tff.backends.native.desugar_and_transform_to_native(add_one)
    computation = type(native).get_proto(native)
    found = fingerprint(computation)
    folder = tmp_path / "policy"
    policy = _policy(folder, {found: "add one", "ab" * 32: "something else"})
    check = ApprovedComputations(policy, Fingerprints())
    request = _create_value(executor_pb2.Value(computation=computation))
    check.check(Call("clinic", "CreateValue", request))
    reads = policy.reloads
    check.check(Call("clinic", "CreateValue", request))
    assert policy.reloads == reads  # Unchanged files are not read again.
    path = folder / gatekeeper.APPROVALS
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines() if not line.startswith(found)))
    with pytest.raises(Refused, match=f"refused computation {found}: it is not on the site's approval list"):
        check.check(Call("clinic", "CreateValue", request))
    path.write_text(path.read_text() + "not a fingerprint\n")
    with pytest.raises(ValueError, match=r"the site's policy does not read .*line 2: 'not a fingerprint'"):
        check.check(Call("clinic", "CreateValue", request))
    path.write_text(f"{found} add one, approved again\n")
    check.check(Call("clinic", "CreateValue", request))
    assert policy.pins == {}
    gatekeeper.pin(folder, {"client_work.learning_rate": 0.02})
    assert policy.pins == {"client_work.learning_rate": 0.02}


def test_pin_keeps_the_files_comments_and_lines_and_replaces_it_whole(tmp_path):
    text = ("# Our pins, agreed with the clinic on 3 December.\n"
            "client_work.learning_rate = 0.02  # the original's rate\n"
            "\n"
            "# Momentum is not used.\n")
    (tmp_path / gatekeeper.PINS).write_text(text)
    inode = (tmp_path / gatekeeper.PINS).stat().st_ino
    assert gatekeeper.pin(tmp_path, {"client_work.learning_rate": 0.05, "server.rate": 1.0}) == {
        "client_work.learning_rate": 0.05, "server.rate": 1.0}
    assert (tmp_path / gatekeeper.PINS).read_text() == (
        "# Our pins, agreed with the clinic on 3 December.\n"
        "client_work.learning_rate = 0.05  # the original's rate\n"
        "\n"
        "# Momentum is not used.\n"
        "server.rate = 1.0\n")
    assert (tmp_path / gatekeeper.PINS).stat().st_ino != inode  # Replaced in one step, not rewritten in place.
    assert [p.name for p in tmp_path.iterdir()] == [gatekeeper.PINS]  # No temporary file left.
    with pytest.raises(ValueError, match="a pin must be a finite number"):
        gatekeeper.pin(tmp_path, {"x": float("inf")})
    assert gatekeeper.read_pins(tmp_path)["client_work.learning_rate"] == 0.05  # A refused pin changed nothing.


def read_file_computation():
    @tff.tensorflow.computation(np.str_)
    def read_file(path):
        return tf.io.read_file(path)

    return read_file


def test_function_names_are_renumbered_without_merging_two_names():
    from tutorial_helpers.sites.gatekeeper.fingerprints import function_renames

    renames = function_renames(["__inference_f_5", "__inference_f_05", "__inference_g_12_30", "plain"])
    assert renames == {"__inference_f_5": "__inference_f_0", "__inference_f_05": "__inference_f_1",
                       "__inference_g_12_30": "__inference_g_2_3"}
    assert len(set(renames.values())) == len(renames)


@pytest.mark.process
def test_a_client_id_that_is_a_path_fails_at_the_site(sites):
    """An approved computation cannot be pointed at another site's folder by the ids the controller sends."""
    ids, catalogue, roots, _ = sites
    stranger = f"../clinic/clients/{catalogue['clinic'][0]}"
    process = build_site_fed_avg()
    worker = WorkerProcess(cwd=roots["hospital"])
    with create_site_context({"hospital": [stranger]}, site_workers={"hospital": worker}):
        with pytest.raises(RuntimeError, match="(?s)Site 'hospital' .*Not a client id"):
            process.next(process.initialize(), [stranger])
    with pytest.raises(ValueError, match="A description must be one line"):
        approve(roots["hospital"].parent / "unused", {"training\u2028e3b0 forged": process.next})


def test_pinned_values_are_checked_where_the_approved_computations_parameter_names_them(tmp_path):
    """Without a worker: a call passes only with the pinned number, however the controller sends it."""
    import struct

    from tensorflow_federated.proto.v0 import executor_pb2

    from tutorial_helpers.sites.gatekeeper.checks import Call, PinnedValues, Refused
    from tutorial_helpers.sites.gatekeeper.ledger import ValueLedger

    @tff.tensorflow.computation(collections.OrderedDict(x=np.float32, rate=np.float32))
    def scale(x, rate):
        return x * rate

    native = tff.backends.native.desugar_and_transform_to_native(scale)
    computation = type(native).get_proto(native)
    policy = _policy(tmp_path, {fingerprint(computation): "scale"}, "rate = 0.5\nmomentum = 0.9\n")
    ledger = ValueLedger(fingerprint)
    pins = PinnedValues(policy, ledger)
    executor = executor_pb2.ExecutorId(id="e")

    def sent(ref: str, value) -> None:  # What the gate keeps of a CreateValue the worker answered with `ref`.
        request = executor_pb2.CreateValueRequest(executor=executor, value=value)
        answer = executor_pb2.CreateValueResponse(value_ref=executor_pb2.ValueRef(id=ref))
        ledger.record("CreateValue", request.SerializeToString(), answer.SerializeToString())

    def call(function: str, argument: str) -> str:
        request = executor_pb2.CreateCallRequest(executor=executor, function_ref=executor_pb2.ValueRef(id=function),
                                                 argument_ref=executor_pb2.ValueRef(id=argument))
        checked = Call("clinic", "CreateCall", request.SerializeToString())
        pins.check(checked)
        return " ".join(checked.notes)

    def argument(rate):
        value, _ = tff.framework.serialize_value(collections.OrderedDict(x=np.float32(3), rate=np.float32(rate)),
                                                 tff.StructType([("x", np.float32), ("rate", np.float32)]))
        return value

    sent("f", executor_pb2.Value(computation=computation))
    sent("right", argument(0.5))
    assert call("f", "right") == (f"computation={fingerprint(computation)} pinned rate=0.5 "
                                  "(pins not in its parameter: momentum)")
    sent("wrong", argument(0.7))
    with pytest.raises(Refused, match=r"its rate is 0.7\d*, and the site pins it to 0.5 \(pins.txt\)"):
        call("f", "wrong")
    unnamed = argument(0.7)  # The names stripped: the position, from the approved type, still finds it.
    for element in unnamed.struct.element:
        element.name = ""
    sent("unnamed", unnamed)
    with pytest.raises(Refused, match="its rate is 0.7"):
        call("f", "unnamed")
    raw = argument(0.7)  # The number as raw bytes of shape [1], as the worker reads any non-scalar.
    rate = raw.struct.element[1].value.array
    rate.ClearField("float32_list")
    rate.shape.dim.append(1)
    rate.content = struct.pack("<f", 0.7)
    sent("raw", raw)
    with pytest.raises(Refused, match="its rate is 0.7"):
        call("f", "raw")
    both = argument(0.5)  # 0.5 in the list, 0.7 in the bytes the worker would read for shape [1].
    rate = both.struct.element[1].value.array
    rate.shape.dim.append(1)
    rate.content = struct.pack("<f", 0.7)
    sent("both", both)
    with pytest.raises(Refused, match="could not read the rate it pins .*both a list and raw bytes"):
        call("f", "both")
    short = argument(0.5)  # Fewer numbers than the shape says.
    short.struct.element[1].value.array.shape.dim.append(2)
    sent("short", short)
    with pytest.raises(Refused, match="could not read the rate"):
        call("f", "short")
    with pytest.raises(Refused, match="could not read the rate it pins"):
        call("f", "made-elsewhere")  # An argument the gate did not see sent whole (a selection, a result).
    with pytest.raises(Refused, match="a computation it did not see sent whole"):
        call("unknown", "right")
    ledger.record("Dispose", executor_pb2.DisposeRequest(
        executor=executor, value_ref=[executor_pb2.ValueRef(id="right")]).SerializeToString(), b"")
    with pytest.raises(Refused, match="could not read"):
        call("f", "right")  # Disposed of: forgotten.

    # The worker shares an executor between holders: one holder letting go forgets nothing.
    got = executor_pb2.GetExecutorResponse(executor=executor).SerializeToString()
    ledger.record("GetExecutor", b"", got)
    ledger.record("GetExecutor", b"", got)  # A second holder (a ping, say).
    sent("again", argument(0.5))
    dispose = executor_pb2.DisposeExecutorRequest(executor=executor).SerializeToString()
    ledger.record("DisposeExecutor", dispose, b"")
    assert call("f", "again").startswith(f"computation={fingerprint(computation)} pinned rate=0.5")
    ledger.record("DisposeExecutor", dispose, b"")
    with pytest.raises(Refused, match="did not see sent whole"):
        call("f", "again")  # The last holder let go.


@pytest.mark.process
def test_a_site_that_pins_its_learning_rate_refuses_a_round_with_another(sites, tmp_path):
    ids, catalogue, roots, folders = sites
    folder = tmp_path / "practice-gatekeeper"
    folder.mkdir()
    (folder / gatekeeper.APPROVALS).write_bytes((folders["hospital"] / gatekeeper.APPROVALS).read_bytes())
    pinned = subprocess.run([sys.executable, "-m", "tutorial_helpers.gatekeeper", "pin", str(folder),
                             "client_work.learning_rate=0.02"], capture_output=True, text=True, check=True)
    assert "pinned client_work.learning_rate = 0.02" in pinned.stdout
    assert gatekeeper.read_pins(folder) == {"client_work.learning_rate": 0.02}
    for wrong, message in (("rate=fast", "is not NAME=NUMBER"), ("rate=nan", "a finite number")):
        bad = subprocess.run([sys.executable, "-m", "tutorial_helpers.gatekeeper", "pin", str(folder), wrong],
                             capture_output=True, text=True, check=False)
        assert bad.returncode == 2 and message in bad.stderr, wrong
    clients = catalogue["practice"]
    with create_site_context(roots={"practice": roots["practice"]},
                             gatekeepers={"practice": Gatekeeper(folder)}) as ctx:
        agreed = build_site_fed_avg(client_learning_rate=0.02)
        result = agreed.next(agreed.initialize(), clients)
        assert result.metrics["client_work"]["train"]["num_examples"] > 0
        faster = build_site_fed_avg(client_learning_rate=0.05)
        assert fingerprint(site_part(faster.next)) == fingerprint(site_part(agreed.next))  # Same computation.
        with pytest.raises(PermissionError, match=r"Site 'practice' refused computation [0-9a-f]{64}: its state."
                                                  r"client_work.learning_rate is 0.05, and the site pins it to 0.02"):
            faster.next(faster.initialize(), clients)
        # The number pinned decides, from the next call on: pinned to 0.05, the same gatekeeper lets 0.05 through.
        gatekeeper.pin(folder, {"client_work.learning_rate": 0.05})
        assert faster.next(faster.initialize(), clients).metrics["client_work"]["train"]["num_examples"] > 0
        with pytest.raises(PermissionError, match="is 0.02, and the site pins it to 0.05"):
            agreed.next(agreed.initialize(), clients)
        pids = [worker.pid for worker in ctx.workers]
    calls = read_audit_log(folder)
    checked = [c["detail"].rsplit(" ", 1)[-1] for c in calls if c["call"] == "CreateCall"
               and c["verdict"] == "forwarded" and "pinned" in c["detail"]]
    assert checked == ["state.client_work.learning_rate=0.02", "state.client_work.learning_rate=0.05"]
    assert [c["call"] for c in refusals(folder)] == ["CreateCall", "CreateCall"]
    assert not worker_pids() & set(pids)


@pytest.mark.process
def test_a_gatekeeper_forwards_calls_that_have_no_deadline(sites):
    """A worker started without call_timeout: gRPC gives the gatekeeper an 'infinite' time remaining."""
    ids, catalogue, roots, folders = sites
    worker = SiteWorker(Gatekeeper(folders["practice"], "practice"), cwd=roots["practice"])
    assert worker.call_timeout is None
    start = len(read_audit_log(folders["practice"]))
    process = build_site_fed_avg()
    with create_site_context({"practice": catalogue["practice"]}, site_workers={"practice": worker}):
        result = process.next(process.initialize(), catalogue["practice"])
    assert result.metrics["client_work"]["train"]["num_examples"] > 0
    calls = read_audit_log(folders["practice"])[start:]
    assert "Compute" in [c["call"] for c in calls] and {c["verdict"] for c in calls} == {"forwarded"}


def test_the_value_ledger_keeps_what_the_worker_keeps_and_forgets_what_it_drops():
    """The ledger's contract, directly: shared executors, disposed values, arrays too large to keep."""
    from tensorflow_federated.proto.v0 import executor_pb2

    from tutorial_helpers.sites.gatekeeper.ledger import KEPT_ARRAY_BYTES, ValueLedger

    ledger = ValueLedger(lambda computation: "f" * 64)
    executor = executor_pb2.ExecutorId(id="e")

    def create(ref: str, numbers: list[float]) -> None:
        value, _ = tff.framework.serialize_value(np.array(numbers, np.float32), tff.TensorType(np.float32,
                                                                                                [len(numbers)]))
        request = executor_pb2.CreateValueRequest(executor=executor, value=value)
        ledger.record("CreateValue", request.SerializeToString(),
                      executor_pb2.CreateValueResponse(value_ref=executor_pb2.ValueRef(id=ref)).SerializeToString())

    got = executor_pb2.GetExecutorResponse(executor=executor).SerializeToString()
    ledger.record("GetExecutor", b"", got)
    ledger.record("GetExecutor", b"", got)  # Two holders of one executor (a round and a ping, say).
    create("small", [0.5, 0.25])
    create("weights", [0.0] * (KEPT_ARRAY_BYTES // 4 + 1))
    assert ledger.numbers_at("e", "small", []) == [0.5, 0.25]
    with pytest.raises(ValueError, match="an array of type 0"):
        ledger.numbers_at("e", "weights", [])  # Too large to keep: a pin there cannot be read, so it is refused.
    ledger.record("Dispose", executor_pb2.DisposeRequest(
        executor=executor, value_ref=[executor_pb2.ValueRef(id="weights")]).SerializeToString(), b"")
    with pytest.raises(ValueError, match="did not see sent whole"):
        ledger.numbers_at("e", "weights", [])
    dispose = executor_pb2.DisposeExecutorRequest(executor=executor).SerializeToString()
    ledger.record("DisposeExecutor", dispose, b"")
    assert ledger.numbers_at("e", "small", []) == [0.5, 0.25]  # One holder let go: the worker keeps it.
    ledger.record("DisposeExecutor", dispose, b"")
    with pytest.raises(ValueError, match="did not see sent whole"):
        ledger.numbers_at("e", "small", [])  # The last holder let go.


def test_a_deleted_or_changed_line_of_the_audit_log_is_reported_and_a_log_without_the_chain_would_not_be(tmp_path):
    """The attack: the log's owner deletes the line of a refusal. With the chain, reading the log says where;
    the control, the same deletion in a log of plain lines (the kit before the chain), goes unseen."""
    from tutorial_helpers.sites.gatekeeper.audit_log import BrokenAuditLog, audit_log_problems

    log = AuditLog(tmp_path / gatekeeper.AUDIT_LOG)
    try:
        for call, verdict in [("GetExecutor", "forwarded"), ("CreateValue", "refused"), ("Compute", "forwarded")]:
            log.write(f"{call} in=10 out=5 verdict={verdict} -- a detail")
        second = AuditLog(tmp_path / gatekeeper.AUDIT_LOG)  # A second gatekeeper of the site appends to the chain.
        second.write("Dispose in=1 out=1 verdict=forwarded")
        second.close()
    finally:
        log.close()
    path = tmp_path / gatekeeper.AUDIT_LOG
    intact = path.read_text()
    assert [entry["number"] for entry in read_audit_log(tmp_path)] == ["1", "2", "3", "4"]
    lines = intact.splitlines(keepends=True)

    path.write_text("".join(lines[:1] + lines[2:]))  # The refusal deleted.
    with pytest.raises(BrokenAuditLog, match=r"line 2: numbered 3, so 1 line\(s\) before it are missing"):
        read_audit_log(tmp_path)
    renumbered = [lines[0], "2" + lines[2][1:], "3" + lines[3][1:]]  # Deleted, and the rest renumbered.
    path.write_text("".join(renumbered))
    assert "line 2: its link does not match the line before it" in audit_log_problems(tmp_path)[0]
    path.write_text(intact.replace("verdict=refused", "verdict=forwarded"))  # The refusal made a success.
    assert "line 3: its link does not match" in audit_log_problems(tmp_path)[0]
    path.write_text(intact)
    assert audit_log_problems(tmp_path) == []

    # The control: plain lines, as the log was before the chain, lose a line without a trace.
    plain = "".join(line.split(" ", 2)[2] for line in lines)
    deleted = "".join(line.split(" ", 2)[2] for line in lines[:1] + lines[2:])
    assert [c["verdict"] for c in _plain_entries(plain)] == ["forwarded", "refused", "forwarded", "forwarded"]
    assert [c["verdict"] for c in _plain_entries(deleted)] == ["forwarded", "forwarded", "forwarded"]


def _plain_entries(text: str) -> list[dict[str, str]]:
    """How the kit read its log before the chain: each line's verdict, and nothing to tell a line is gone."""
    return [dict(pair.split("=", 1) for pair in line.partition(" -- ")[0].split(" ") if "=" in pair)
            for line in text.splitlines()]


def _one_example_client(train_data, exclude=()) -> str:
    for client in train_data.client_ids:
        if client not in exclude and len(list(train_data.create_tf_dataset_for_client(client))) == 1:
            return client
    raise AssertionError("the sample has no client with a single example")


@pytest.mark.process
@pytest.mark.parametrize("minimum", [None, 2], ids=["no-minimum", "minimum-of-2"])
def test_a_one_client_round_gives_its_digit_back_unless_the_site_refuses_rounds_under_its_minimum(
        sites, emnist, tmp_path, minimum):
    """The attack: the controller asks the clinic for a round of its one-example client. The model is one dense
    layer and a softmax, so the change of column j of the kernel is the image times the change of bias j: the
    digit comes back from the new model. With the clinic's minimum of 2 clients, the round is refused and
    logged; a round of two of its clients is answered."""
    train_data, _ = emnist
    _, _, _, folders = sites
    client = _one_example_client(train_data)
    other = next(c for c in train_data.client_ids if c != client)
    root = tmp_path / "clinic"
    write_site(train_data, [client, other], root, canary=b"canary of the clinic")
    folder = tmp_path / "clinic-gatekeeper"
    folder.mkdir()
    (folder / gatekeeper.APPROVALS).write_bytes((folders["hospital"] / gatekeeper.APPROVALS).read_bytes())
    if minimum is not None:
        assert gatekeeper.set_limits(folder, {"min_clients": minimum}) == {"min_clients": minimum}
    process = build_site_fed_avg()
    with create_site_context(roots={"clinic": root}, gatekeepers={"clinic": Gatekeeper(folder)}):
        state = process.initialize()
        if minimum is not None:
            with pytest.raises(PermissionError, match=r"Site 'clinic' refused to send back a result computed from 1 "
                                                      r"of its clients: its minimum is 2 \(limits.txt\)"):
                process.next(state, [client])
            (refused,) = [c for c in read_audit_log(folder) if c["verdict"] == "refused"]
            assert refused["call"] == "Compute" and "its minimum is 2" in refused["detail"]
            result = process.next(state, [client, other])  # Two of its clients: answered.
            assert result.metrics["client_work"]["train"]["num_examples"] > 1
            return
        before = process.get_model_weights(state).trainable
        after = process.get_model_weights(process.next(state, [client]).state).trainable
    kernel, bias = after[0] - before[0], after[1] - before[1]
    j = int(np.argmax(np.abs(bias)))
    recovered = kernel[:, j] / bias[j]
    (example,) = preprocess(train_data.create_tf_dataset_for_client(client), num_epochs=1).as_numpy_iterator()
    truth = example["x"].ravel()
    assert np.corrcoef(recovered, truth)[0, 1] > 0.99
    assert np.max(np.abs(recovered - truth)) < 1e-3  # The digit itself, not a likeness.


def test_a_sites_limits_are_checked_and_rounds_can_be_drawn_to_meet_them(tmp_path):
    from tutorial_helpers.sites import sample_clients

    with pytest.raises(ValueError, match="min_clients is a whole number of at least 1. The limits are: min_clients"):
        gatekeeper.set_limits(tmp_path, {"min_clients": 0})
    with pytest.raises(ValueError, match="max_epsilon = 3: it is not a limit this kit knows. The limits are: "
                                         "min_clients, .*; noise_multiplier, .*; epsilon, .*; delta, "):
        gatekeeper.set_limits(tmp_path, {"max_epsilon": 3})
    assert not (tmp_path / gatekeeper.LIMITS_FILE).exists()  # A refused limit writes nothing.
    assert gatekeeper.set_limits(tmp_path, {"min_clients": 3}) == {"min_clients": 3}
    (tmp_path / gatekeeper.LIMITS_FILE).write_text("min_clients = 2.5\n")
    with pytest.raises(ValueError, match=r"limits.txt, line 1: 'min_clients = 2.5': min_clients is a whole number"):
        gatekeeper.read_limits(tmp_path)

    catalogue = {"hospital": [f"h{i}" for i in range(60)], "clinic": [f"c{i}" for i in range(30)],
                 "practice": [f"p{i}" for i in range(9)]}
    minimums = {"clinic": 3, "practice": 2}
    rounds = [sample_clients(catalogue, 10, seed=seed, min_per_site=minimums) for seed in range(1, 21)]
    for drawn in rounds:
        counts = {site: sum(c in held for c in drawn) for site, held in catalogue.items()}
        assert all(counts[site] in (0,) or counts[site] >= k for site, k in minimums.items()), counts
    plain = [sample_clients(catalogue, 10, seed=seed) for seed in range(1, 21)]
    assert any(0 < sum(c in catalogue["practice"] for c in drawn) < 2 for drawn in plain)  # The control.
    assert rounds == [sample_clients(catalogue, 10, seed=seed, min_per_site=minimums) for seed in range(1, 21)]
    with pytest.raises(ValueError, match="ask the sites for lower minimums"):
        sample_clients(catalogue, 2, seed=1, min_per_site={"hospital": 3, "clinic": 3, "practice": 3})
