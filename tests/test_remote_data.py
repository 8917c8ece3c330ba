"""Tests of DataBackend, DataExecutor and create_execution_context on TFF's real worker."""

import asyncio
import collections
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.proto.v0 import computation_pb2 as pb

from tests.conftest import worker_pids
from tutorial_helpers import remote_data
from tutorial_helpers.data import client_dataset
from tutorial_helpers.runtime.tff_private import Executor
from tutorial_helpers.worker_process import WorkerProcess

COUNT_TYPE = tff.SequenceType(np.int64)


def uri_index(uri: str) -> int:
    return int(uri.removeprefix("uri://"))


class RangeBackend(remote_data.DataBackend):
    """`uri://n` -> the dataset 0, 1, ..., n-1; records how many fetches overlap."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0
        self.uris = []

    async def materialize(self, data, type_spec):
        self.uris.append(data.uri)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            return tf.data.Dataset.range(uri_index(data.uri))
        finally:
            self.in_flight -= 1


@tff.tensorflow.computation(COUNT_TYPE)
def count_elements(dataset):
    return dataset.reduce(np.int64(0), lambda n, _: n + 1)


@tff.federated_computation(tff.FederatedType(COUNT_TYPE, tff.CLIENTS))
def count_per_client(datasets):
    return tff.federated_map(count_elements, datasets)


def descriptor(uris, arg_type=COUNT_TYPE):
    return tff.framework.CreateDataDescriptor(arg_uris=list(uris), arg_type=arg_type)


def data_reference(uri, arg_type=COUNT_TYPE):
    """What CreateDataDescriptor puts in place of each client's data."""
    return pb.Computation(data=pb.Data(uri=uri), type=tff.types.serialize_type(arg_type))


def test_data_backend_is_abstract():
    with pytest.raises(TypeError):
        remote_data.DataBackend()

    class Incomplete(remote_data.DataBackend):
        pass

    with pytest.raises(TypeError, match="materialize"):
        Incomplete()


def test_what_notebooks_use_of_remote_data_is_public():
    """Every name the notebooks, solutions and docs take from remote_data is in its __all__, and exists."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    texts = [path.read_text() for pattern in ("notebooks/*.ipynb", "notebooks/solutions/*.py", "docs/*.md")
             for path in root.glob(pattern)]
    used = set()
    for text in texts:
        used |= set(re.findall(r"(?<![\w/])remote_data\.([A-Za-z_]\w*)", text)) - {"py", "ipynb"}
        for names in re.findall(r"from tutorial_helpers\.remote_data import ([\w, ]+)", text):
            used |= {name.strip() for name in names.split(",")}
    assert used, "no use of remote_data found: the pattern is wrong"
    assert used <= set(remote_data.__all__), used - set(remote_data.__all__)
    for name in remote_data.__all__:
        assert getattr(remote_data, name).__doc__, name


def test_constructors_reject_a_backend_that_is_not_a_data_backend():
    with pytest.raises(TypeError, match="DataBackend subclass, got dict"):
        remote_data.create_execution_context({})
    with pytest.raises(TypeError, match="must be a TFF executor, got str"):
        remote_data.DataExecutor("not an executor", RangeBackend())


@pytest.mark.process
def test_materializes_every_client_concurrently():
    backend = RangeBackend(delay=0.3)
    with remote_data.create_execution_context(backend):
        counts = count_per_client(descriptor(f"uri://{n}" for n in (3, 1, 4, 1, 5)))
    assert list(counts) == [3, 1, 4, 1, 5]
    assert sorted(backend.uris) == sorted(f"uri://{n}" for n in (3, 1, 4, 1, 5))
    assert backend.max_in_flight == 5


class RecordingExecutor(Executor):
    """Delegates to a real executor and records each call it receives."""

    def __init__(self, target):
        self.target = target
        self.calls = []

    async def create_value(self, value, type_spec=None):
        self.calls.append(("create_value", value, type_spec))
        return await self.target.create_value(value, type_spec)

    async def create_call(self, comp, arg=None):
        self.calls.append(("create_call", comp, arg))
        return await self.target.create_call(comp, arg)

    async def create_struct(self, elements):
        self.calls.append(("create_struct", elements, None))
        return await self.target.create_struct(elements)

    async def create_selection(self, source, index):
        self.calls.append(("create_selection", source, index))
        return await self.target.create_selection(source, index)

    def close(self):
        self.calls.append(("close", None, None))
        self.target.close()


@pytest.mark.process
def test_data_executor_resolves_data_and_delegates_everything_else_untouched():
    backend = RangeBackend()
    with WorkerProcess() as worker:
        remote = tff.framework.RemoteExecutor(worker.stub)
        remote.set_cardinalities({tff.CLIENTS: 3})
        recorder = RecordingExecutor(remote)
        executor = remote_data.DataExecutor(recorder, backend)

        async def run():
            plain = np.int64(7)
            plain_value = await executor.create_value(plain, tff.TensorType(np.int64))
            clients = [
                data_reference("uri://2"),
                tf.data.Dataset.range(6),  # Not a reference: passed on as it is.
                data_reference("uri://4"),
            ]
            federated_type = tff.FederatedType(COUNT_TYPE, tff.CLIENTS)
            datasets = await executor.create_value(clients, federated_type)
            fn = await executor.create_value(count_per_client, count_per_client.type_signature)
            result = await executor.create_call(fn, datasets)
            struct = await executor.create_struct([plain_value, result])
            selected = await executor.create_selection(struct, 1)
            return plain, clients, await selected.compute()

        plain, clients, counts = asyncio.run(run())
        executor.close()

    assert [int(c) for c in counts] == [2, 6, 4]
    kinds = [call[0] for call in recorder.calls]
    assert kinds == [
        "create_value", "create_value", "create_value",
        "create_call", "create_struct", "create_selection", "close",
    ]
    assert recorder.calls[0][1] is plain  # Non-data values are forwarded as they are.
    forwarded = recorder.calls[1][1]
    assert forwarded[1] is clients[1]
    assert all(isinstance(d, tf.data.Dataset) for d in forwarded)
    assert backend.uris == ["uri://2", "uri://4"]


class FailingBackend(remote_data.DataBackend):
    async def materialize(self, data, type_spec):
        if data.uri == "uri://bad":
            raise KeyError("no such client")
        return tf.data.Dataset.range(2)


@pytest.mark.process
def test_a_failing_materialize_names_the_uri_and_backend_and_the_context_survives():
    with remote_data.create_execution_context(FailingBackend()) as ctx:
        with pytest.raises(RuntimeError) as raised:
            count_per_client(descriptor(["uri://1", "uri://bad", "uri://2"]))
        message = str(raised.value)
        assert "'uri://bad'" in message
        assert "FailingBackend.materialize" in message
        assert "no such client" in message
        assert isinstance(raised.value.__cause__, KeyError)
        # The worker is unaffected and the next call works.
        assert list(count_per_client(descriptor(["uri://1"]))) == [2]
        pid = ctx.worker.pid
    assert pid not in worker_pids()


class AllFailBackend(remote_data.DataBackend):
    async def materialize(self, data, type_spec):
        await asyncio.sleep(0)
        raise ConnectionError(f"no service for {data.uri}")


@pytest.mark.process
def test_when_every_client_fails_one_error_is_raised_and_none_is_left_unretrieved(caplog):
    import gc

    with remote_data.create_execution_context(AllFailBackend()):
        with pytest.raises(RuntimeError, match="'uri://0'"):
            count_per_client(descriptor(f"uri://{i}" for i in range(5)))
    gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


class WrongTypeBackend(remote_data.DataBackend):
    async def materialize(self, data, type_spec):
        return tf.data.Dataset.from_tensor_slices(np.zeros([3, 2], np.float32))


@pytest.mark.process
def test_a_payload_of_the_wrong_type_is_a_type_error_naming_uri_and_both_types():
    with remote_data.create_execution_context(WrongTypeBackend()):
        with pytest.raises(TypeError) as raised:
            count_per_client(descriptor(["uri://0"]))
    message = str(raised.value)
    assert "'uri://0'" in message
    assert "expected int64*" in message
    assert "got float32[2]*" in message


@pytest.mark.process
def test_close_stops_the_worker_and_later_calls_say_so():
    previous = tff.framework.get_context_stack().current
    ctx = remote_data.create_execution_context(RangeBackend())
    pid = ctx.worker.pid
    assert pid in worker_pids()
    tff.framework.set_default_context(ctx)
    try:
        assert list(count_per_client(descriptor(["uri://3"]))) == [3]
        ctx.close()
        ctx.close()  # Closing twice is harmless.
        assert pid not in worker_pids()
        with pytest.raises(RuntimeError, match="execution context is closed"):
            count_per_client(descriptor(["uri://3"]))
    finally:
        ctx.close()
        tff.framework.set_default_context(previous)


@pytest.mark.process
def test_with_block_installs_the_context_and_restores_the_previous_one():
    before = tff.framework.get_context_stack().current
    with remote_data.create_execution_context(RangeBackend()) as ctx:
        assert tff.framework.get_context_stack().current is ctx
    assert tff.framework.get_context_stack().current is before
    assert ctx.closed and not ctx.worker.is_running()


@pytest.mark.process
def test_a_killed_worker_gives_a_clear_error_instead_of_retrying_forever():
    with remote_data.create_execution_context(RangeBackend()) as ctx:
        assert list(count_per_client(descriptor(["uri://2"]))) == [2]
        os.kill(ctx.worker.pid, signal.SIGKILL)
        ctx.worker._process.wait(timeout=10)
        with pytest.raises(RuntimeError, match=r"TFF worker \(pid \d+.*\) is not running"):
            count_per_client(descriptor(["uri://2"]))


@pytest.mark.process
def test_the_worker_dies_with_its_parent_even_on_sigkill(tmp_path):
    """A killed Jupyter kernel must not leave its worker running."""
    script = textwrap.dedent(
        """
        import sys, time
        from tutorial_helpers import remote_data

        class Backend(remote_data.DataBackend):
            async def materialize(self, data, type_spec):
                raise NotImplementedError

        ctx = remote_data.create_execution_context(Backend())
        print(ctx.worker.pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    try:
        worker_pid = int(parent.stdout.readline())
        assert worker_pid in worker_pids()
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while worker_pid in worker_pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert worker_pid not in worker_pids()
    finally:
        parent.kill()
        parent.stdout.close()


@pytest.mark.process
def test_original_flow_two_fedavg_rounds_match_passing_datasets_directly(emnist):
    """The original tutorial's code, with only the API names of TFF 0.87 substituted."""
    emnist_train, _ = emnist

    class TestDataBackend(remote_data.DataBackend):
        async def materialize(self, data, type_spec):
            client_id = int(data.uri.removeprefix("uri://"))
            return client_dataset(emnist_train, client_id)

    example = client_dataset(emnist_train, 0)

    def model_fn():
        keras_model = tf.keras.models.Sequential(
            [
                tf.keras.layers.InputLayer(input_shape=(784,)),
                tf.keras.layers.Dense(10, kernel_initializer="zeros"),
                tf.keras.layers.Softmax(),
            ]
        )
        return tff.learning.models.from_keras_model(
            keras_model,
            input_spec=example.element_spec,
            loss=tf.keras.losses.SparseCategoricalCrossentropy(),
            metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
        )

    process = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=0.02),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=1.0),
    )
    element_type = tff.types.StructWithPythonType(
        [("x", tff.TensorType(np.float32, [1, 784])), ("y", tff.TensorType(np.int32, [1, 1]))],
        collections.OrderedDict,
    )
    dataset_type = tff.types.SequenceType(element_type)
    data_uris = [f"uri://{i}" for i in range(5)]
    data_handle = tff.framework.CreateDataDescriptor(arg_uris=data_uris, arg_type=dataset_type)
    direct = [client_dataset(emnist_train, i) for i in range(5)]

    previous = tff.framework.get_context_stack().current
    ctx = remote_data.create_execution_context(TestDataBackend())
    tff.framework.set_default_context(ctx)
    try:
        initial = process.initialize()
        via_uris, via_datasets = [], []
        state = initial
        for _ in range(2):
            result = process.next(state, data_handle)
            state = result.state
            via_uris.append(result.metrics["client_work"]["train"])
        state = initial
        for _ in range(2):
            result = process.next(state, direct)
            state = result.state
            via_datasets.append(result.metrics["client_work"]["train"])
    finally:
        ctx.close()
        tff.framework.set_default_context(previous)

    assert via_uris == via_datasets
    assert via_uris[0]["num_examples"] == via_uris[1]["num_examples"] > 0
    assert via_uris[1]["sparse_categorical_accuracy"] > via_uris[0]["sparse_categorical_accuracy"]
    assert via_uris[1]["loss"] < via_uris[0]["loss"]


def notebook_data_executor():
    """The DataExecutor notebook 03 builds step by step, run from the notebook's own cells."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "notebooks" / "03_execution_context.ipynb"
    starts = ("def is_data_reference", "async def materialize_all", "def check_payload",
              "from tensorflow_federated.python.core.impl.executors.executor_base import Executor",
              "class ForwardingExecutor", "class DataExecutor")
    cells = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    chosen = [next(c for c in cells if c.startswith(start)) for start in starts]
    namespace = {"asyncio": asyncio, "pb": pb, "tf": tf, "tff": tff, "reference": data_reference("uri://0"),
                 "print": lambda *args: None}
    for cell in chosen:
        exec(compile(cell, str(path), "exec"), namespace)
    return namespace["DataExecutor"]


@pytest.mark.process
@pytest.mark.parametrize("executor", ["notebook 03", "packaged"])
def test_notebook_03s_data_executor_behaves_like_the_packaged_one(executor):
    data_executor = notebook_data_executor() if executor == "notebook 03" else remote_data.DataExecutor
    backend = RangeBackend(delay=0.2)
    with remote_data.create_execution_context(backend, data_executor=data_executor):
        assert list(count_per_client(descriptor(["uri://3", "uri://0", "uri://7", "uri://3"]))) == [3, 0, 7, 3]
        assert backend.max_in_flight == 4  # Fetched concurrently.
    with remote_data.create_execution_context(FailingBackend(), data_executor=data_executor):
        with pytest.raises(RuntimeError, match="FailingBackend.materialize failed for URI 'uri://bad': "
                           "KeyError: 'no such client'") as raised:
            count_per_client(descriptor(["uri://1", "uri://bad"]))
        assert isinstance(raised.value.__cause__, KeyError)  # The backend's own error, kept.
        assert list(count_per_client(descriptor(["uri://1"]))) == [2]  # Still usable.
    with remote_data.create_execution_context(WrongTypeBackend(), data_executor=data_executor):
        with pytest.raises(TypeError, match=r"'uri://0'.*int64\*") as raised:
            count_per_client(descriptor(["uri://0"]))
        assert "float32[2]*" in str(raised.value)


def test_create_execution_context_rejects_a_data_executor_that_is_not_callable():
    with pytest.raises(TypeError, match="data_executor must be a class or function"):
        remote_data.create_execution_context(RangeBackend(), data_executor="DataExecutor")
