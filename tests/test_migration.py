"""Runs the code of docs/migration.md.

Every ```python block of the page is either run, in page order and in one
namespace, on TFF 0.87 with the kit ("Now" snippets and the page's setup), or
marked with `<!-- not run: <reason> -->` right before its fence. Only "Before"
snippets, the deleted API, may be marked, every one of them must be, and each
must really fail on TFF 0.87.
"""

import asyncio
import collections
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "migration.md"
FENCE = re.compile(r"^```(?P<info>[^\n]*)\n(?P<code>.*?)^```$", re.DOTALL | re.MULTILINE)
NOT_RUN = re.compile(r"<!-- not run: (?P<reason>[^\n]*?) -->\s*\Z")


@dataclass
class Block:
    line: int  # Of the opening fence, 1-based.
    code: str
    label: str  # The paragraph above the block (and above its marker).
    skip_reason: str | None  # None: the block is run.

    @property
    def where(self) -> str:
        return f"{PAGE.name}:{self.line}"


def page_blocks() -> list[Block]:
    text = PAGE.read_text(encoding="utf-8")
    blocks = []
    for fence in FENCE.finditer(text):
        line = text.count("\n", 0, fence.start()) + 1
        assert fence["info"].strip() == "python", (
            f"{PAGE.name}:{line}: a fenced block that is not ```python escapes this test."
        )
        before = text[: fence.start()]
        marker = NOT_RUN.search(before)
        if marker:
            before = before[: marker.start()]
        label = re.split(r"\n\s*\n", before.strip())[-1]
        reason = marker["reason"].strip() if marker else None
        blocks.append(Block(line, fence["code"], " ".join(label.split()), reason))
    return blocks


def test_each_block_is_run_or_marked_as_the_old_api():
    blocks = page_blocks()
    for block in blocks:
        if block.label.startswith("Before"):
            assert block.skip_reason, f"{block.where}: a Before snippet needs <!-- not run: reason -->"
        if block.skip_reason is not None:
            assert block.label.startswith("Before"), (
                f"{block.where}: only Before snippets (the deleted API) may be left unrun, "
                f"not one labelled {block.label[:60]!r}"
            )
            assert len(block.skip_reason) >= 10, f"{block.where}: say why it is not run"
        else:
            lines = [line.strip() for line in block.code.splitlines()]
            assert "..." not in lines, f"{block.where}: a run snippet must be complete, not '...'"
    assert sum(b.skip_reason is None for b in blocks) >= 5, "the page's Now snippets are gone"
    assert sum(b.skip_reason is not None for b in blocks) >= 2, "the page's Before snippets are gone"


@pytest.fixture(scope="module")
def page(emnist):
    """The namespace after running the page's snippets, in order, with one TFF worker."""
    import tensorflow_federated as tff

    from tutorial_helpers import data

    def load_emnist(source="auto", cache_dir=None, verbose=True):
        # The session's copy of the bundled sample (conftest's `emnist`): the
        # page asks for the sample, and writing it again would cost seconds.
        assert source == "sample", f"the page loads {source!r}, not the bundled sample"
        return emnist

    previous = tff.framework.get_context_stack().current
    namespace = {"__name__": "migration_page"}
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(data, "load_emnist", load_emnist)
            for block in page_blocks():
                code = compile(block.code, block.where, "exec")
                if block.skip_reason is None:
                    exec(code, namespace)
                    continue
                # The old API must really be gone: the snippet fails on TFF 0.87
                # for a reason other than a name the page did not define.
                with pytest.raises(Exception) as raised:  # noqa: B017
                    exec(code, dict(namespace))
                assert not isinstance(raised.value, NameError), (
                    f"{block.where}: the Before snippet fails only for lack of a name: {raised.value}"
                )
        yield namespace
    finally:
        if "ctx" in namespace and hasattr(namespace["ctx"], "close"):
            namespace["ctx"].close()
        tff.framework.set_default_context(previous)


@pytest.mark.process
def test_now_snippets_train_a_round_and_stop_the_worker(page, capsys):
    from tutorial_helpers import expected_results

    # The original's first round: 1,440 examples, accuracy and loss on the reference.
    expected_results.check_training([page["result"].metrics])
    assert "on track: 1 round of 1,440 examples" in capsys.readouterr().out
    assert page["ctx"].closed, "the page's last snippet stops the worker"


@pytest.mark.parametrize(
    "uri",
    [
        "uri://-1",  # A negative index would serve a client from the end of the list.
        "uri://+3",
        "uri://04",
        "uri:// 4",
        "uri://4 ",
        "uri://3\n",
        "uri://1_0",
        "uri://٣",  # ARABIC-INDIC DIGIT THREE
        "uri://３",  # FULLWIDTH DIGIT THREE
        "3",
        "uri://",
        "URI://3",
        "uri://100",  # One past the last of 100 clients.
    ],
)
@pytest.mark.process
def test_recommended_parse_refuses(page, uri):
    with pytest.raises(ValueError, match=re.escape(repr(uri))):  # Names the URI it refuses.
        page["parse_client_uri"](uri, 100)


@pytest.mark.process
@pytest.mark.parametrize(("uri", "index"), [("uri://0", 0), ("uri://12", 12), ("uri://99", 99)])
def test_recommended_parse_accepts(page, uri, index):
    assert page["parse_client_uri"](uri, 100) == index


@pytest.mark.process
def test_backend_uses_the_strict_parse(page):
    import tensorflow as tf
    from tensorflow_federated.proto.v0 import computation_pb2 as pb

    backend = page["TestDataBackend"]()
    for uri in ("uri://-1", "uri://04", "3"):
        with pytest.raises(ValueError, match=re.escape(repr(uri))):
            asyncio.run(backend.materialize(pb.Data(uri=uri), None))
    dataset = asyncio.run(backend.materialize(pb.Data(uri="uri://0"), None))
    assert isinstance(dataset, tf.data.Dataset)


@pytest.mark.process
def test_descriptor_type_is_exactly_the_models_input_type(page):
    import numpy as np
    import tensorflow as tf
    import tensorflow_federated as tff

    from tutorial_helpers import model

    federated = tff.FederatedType(page["dataset_type"], tff.CLIENTS)
    expected = page["iterative_process"].next.type_signature.parameter[1]
    assert expected == federated
    assert page["dataset_type"] == model.DATASET_TYPE
    spec = page["preprocessed_example_dataset"].element_spec
    assert tff.types.tensorflow_to_type(spec) == page["element_type"]
    # What the page says fails does fail.
    unknown_batch = tff.types.SequenceType(
        tff.types.StructWithPythonType(
            [("x", tff.TensorType(np.float32, [None, 784])), ("y", tff.TensorType(np.int32, [None, 1]))],
            collections.OrderedDict,
        )
    )
    assert not expected.is_assignable_from(tff.FederatedType(unknown_batch, tff.CLIENTS))
    with pytest.raises(TypeError, match="TensorSpec"):
        tff.types.StructWithPythonType(spec, container_type=collections.OrderedDict)
    with pytest.raises(NotImplementedError):
        tff.TensorType(tf.float32, [1, 784])
