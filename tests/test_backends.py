"""Tests of the packaged URI backend and its URI parser."""

import asyncio

import pytest
from tensorflow_federated.proto.v0 import computation_pb2 as pb

from tutorial_helpers.backends import ClientDataBackend, parse_client_uri
from tutorial_helpers.data import client_dataset


@pytest.mark.parametrize(
    ("uri", "index"),
    [("uri://0", 0), ("uri://7", 7), ("uri://13", 13), ("uri://98", 98), ("uri://123456789", 123456789)],
)
def test_parses_every_index_not_only_the_last_digit(uri, index):
    assert parse_client_uri(uri) == index


MALFORMED = [
    "",                     # empty
    "uri://",               # no index
    "http://3",             # wrong scheme
    "URI://3",              # scheme is case-sensitive
    "uri:/3",               # one slash
    "uri://-1",             # negative
    "uri://+1",             # signed
    "uri://03",             # leading zero: two spellings of one client
    "uri://3 ",             # trailing space
    " uri://3",             # leading space
    "uri://3\n",            # trailing newline
    "uri://1e3",            # not an integer
    "uri://1234567890",     # huge: more than 9 digits
    "uri://9" * 3,          # repeated
    "uri://../3",           # path traversal
    "uri://3/../../etc/passwd",
    "uri://٣",              # Arabic-Indic digit three: \d would accept it
    "uri://３",             # full-width digit three
    "uri://3?x=1",          # query string
]


@pytest.mark.parametrize("uri", MALFORMED)
def test_rejects_malformed_uris_naming_them(uri):
    with pytest.raises(ValueError) as raised:
        parse_client_uri(uri)
    assert repr(uri) in str(raised.value)
    assert "uri://<index>" in str(raised.value)


def test_rejects_indices_out_of_range_with_the_valid_range():
    with pytest.raises(ValueError, match=r"'uri://99' names client 99, but there are 99 clients: use uri://0 to uri://98"):
        parse_client_uri("uri://99", num_clients=99)


def test_rejects_non_strings():
    with pytest.raises(TypeError, match="must be a string, got bytes b'uri://3'"):
        parse_client_uri(b"uri://3")


def test_client_data_backend_serves_the_indexed_client(emnist):
    train, _ = emnist
    backend = ClientDataBackend(train)
    dataset = asyncio.run(backend.materialize(pb.Data(uri="uri://13"), None))
    expected = client_dataset(train, 13)
    assert [e["y"].numpy().item() for e in dataset] == [e["y"].numpy().item() for e in expected]
    with pytest.raises(ValueError, match="'uri://99'"):
        asyncio.run(backend.materialize(pb.Data(uri="uri://99"), None))
