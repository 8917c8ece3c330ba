"""DataExecutor leaves no fetch behind: not on a failure, not when its caller is cancelled.

These are properties of asyncio tasks, so no TFF worker is needed: the
`DataExecutor` forwards to a stand-in executor, and the backends are real
`DataBackend` subclasses whose fetches wait until they are cancelled.
"""

import asyncio
import gc

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.proto.v0 import computation_pb2 as pb

from tutorial_helpers import remote_data
from tutorial_helpers.runtime.tff_private import Executor

COUNT_TYPE = tff.SequenceType(np.int64)
CLIENTS_TYPE = tff.FederatedType(COUNT_TYPE, tff.CLIENTS)
URIS = [f"uri://{i}" for i in range(5)]


def references(uris=URIS):
    """The CLIENTS-placed list `CreateDataDescriptor` hands to `create_value`."""
    return [
        pb.Computation(data=pb.Data(uri=uri), type=tff.types.serialize_type(COUNT_TYPE))
        for uri in uris
    ]


class TargetExecutor(Executor):
    """Stands in for TFF's RemoteExecutor: records the values it is given."""

    def __init__(self):
        self.values = []

    async def create_value(self, value, type_spec=None):
        self.values.append(value)
        return value

    async def create_call(self, comp, arg=None):
        raise NotImplementedError

    async def create_struct(self, elements):
        raise NotImplementedError

    async def create_selection(self, source, index):
        raise NotImplementedError

    def close(self):
        pass


class SlowBackend(remote_data.DataBackend):
    """Every fetch waits until cancelled, then takes `cleanup` seconds to finish.

    `fail` names URIs whose fetch fails once all fetches have started.
    """

    def __init__(self, cleanup: float = 0.0, fail=()):
        self.cleanup = cleanup
        self.fail = set(fail)
        self.started, self.cancelled, self.finished = [], [], []

    async def materialize(self, data, type_spec):
        self.started.append(data.uri)
        try:
            while len(self.started) < len(URIS):
                await asyncio.sleep(0)
            if data.uri in self.fail:
                raise ConnectionError(f"no service for {data.uri}")
            await asyncio.sleep(60)
            return tf.data.Dataset.range(3)
        except asyncio.CancelledError:
            self.cancelled.append(data.uri)
            await asyncio.sleep(self.cleanup)  # E.g. closing a connection.
            raise
        finally:
            self.finished.append(data.uri)


def other_tasks():
    return [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]


async def start_and_cancel(executor, backend):
    call = asyncio.ensure_future(executor.create_value(references(), CLIENTS_TYPE))
    while len(backend.started) < len(URIS):
        await asyncio.sleep(0.001)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


@pytest.mark.parametrize("cleanup", [0.0, 0.05])
def test_cancelling_the_caller_cancels_and_awaits_every_fetch(cleanup, caplog):
    backend = SlowBackend(cleanup=cleanup)
    target = TargetExecutor()
    executor = remote_data.DataExecutor(target, backend)

    async def scenario():
        await start_and_cancel(executor, backend)
        # By the time the cancelled call has returned, every fetch has ended.
        assert sorted(backend.cancelled) == URIS
        assert sorted(backend.finished) == URIS
        assert other_tasks() == []

    asyncio.run(scenario())
    gc.collect()
    assert target.values == []  # Nothing was passed on.
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


def test_a_cancellation_while_the_fetches_are_being_stopped_still_waits_for_them(caplog):
    """A second cancel, during the cleanup of the first, must not orphan the fetches."""
    backend = SlowBackend(cleanup=0.1)
    executor = remote_data.DataExecutor(TargetExecutor(), backend)

    async def scenario():
        call = asyncio.ensure_future(executor.create_value(references(), CLIENTS_TYPE))
        while len(backend.started) < len(URIS):
            await asyncio.sleep(0.001)
        call.cancel()
        while len(backend.cancelled) < len(URIS):
            await asyncio.sleep(0.001)
        call.cancel()  # Again, while the fetches are still cleaning up.
        with pytest.raises(asyncio.CancelledError):
            await call
        assert sorted(backend.finished) == URIS
        assert other_tasks() == []

    asyncio.run(scenario())
    gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


def test_the_first_failure_in_uri_order_is_raised_after_the_other_fetches_ended(caplog):
    backend = SlowBackend(cleanup=0.02, fail={"uri://3", "uri://1"})
    executor = remote_data.DataExecutor(TargetExecutor(), backend)

    async def scenario():
        with pytest.raises(RuntimeError, match=r"SlowBackend.materialize failed for URI 'uri://1'"):
            await executor.create_value(references(), CLIENTS_TYPE)
        assert sorted(backend.cancelled) == ["uri://0", "uri://2", "uri://4"]
        assert sorted(backend.finished) == URIS
        assert other_tasks() == []

    asyncio.run(scenario())
    gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


def test_without_failure_or_cancellation_the_payloads_are_passed_on_in_order():
    class QuickBackend(remote_data.DataBackend):
        async def materialize(self, data, type_spec):
            index = int(data.uri.removeprefix("uri://"))
            await asyncio.sleep(0.01 * (len(URIS) - index))  # The last URI finishes first.
            return tf.data.Dataset.range(index)

    target = TargetExecutor()
    executor = remote_data.DataExecutor(target, QuickBackend())
    asyncio.run(executor.create_value(references(), CLIENTS_TYPE))
    (datasets,) = target.values
    assert [len(list(dataset)) for dataset in datasets] == [0, 1, 2, 3, 4]
