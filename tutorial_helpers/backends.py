"""Data backends the notebooks build, packaged for the notebooks that follow.

Notebook 02 writes `ClientDataBackend` step by step; later notebooks import it
from here.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import tensorflow as tf
import tensorflow_federated as tff

from tutorial_helpers import data as kit_data
from tutorial_helpers.data_service import CLIENT_INDEX
from tutorial_helpers.remote_data import DataBackend

# "uri://" and a client index as the data service's paths have it.
_CLIENT_URI = re.compile("uri://" + CLIENT_INDEX)


def parse_client_uri(uri: str, num_clients: int | None = None) -> int:
    """Returns the client index of `uri://<index>`; a clear error for anything else.

    Args:
      uri: the URI, e.g. "uri://3".
      num_clients: if given, the index must be below it.

    Raises:
      TypeError: `uri` is not a string.
      ValueError: `uri` is not of the form `uri://<index>`, or the index is
        out of range. The message names the URI and the form expected.
    """
    if not isinstance(uri, str):
        raise TypeError(f"A client URI must be a string, got {type(uri).__name__} {uri!r}.")
    match = _CLIENT_URI.fullmatch(uri)
    if match is None:
        raise ValueError(
            f"Malformed client URI {uri!r}: expected 'uri://<index>', a client index of at "
            "most 9 ASCII digits without leading zeros, such as 'uri://3'."
        )
    index = int(match.group(1))
    if num_clients is not None and index >= num_clients:
        raise ValueError(
            f"Client URI {uri!r} names client {index}, but there are {num_clients} clients: "
            f"use uri://0 to uri://{num_clients - 1}."
        )
    return index


class ClientDataBackend(DataBackend):
    """Serves `uri://<index>` as the dataset of the `index`-th client of a `ClientData`.

    Clients are numbered in the order of `client_data.client_ids` (sorted).

    Args:
      client_data: a TFF `ClientData`, e.g. the EMNIST training data.
      preprocess_fn: applied to each client's dataset (default: the
        tutorial's `preprocess`).
    """

    def __init__(
        self,
        client_data: tff.simulation.datasets.ClientData,
        preprocess_fn: Callable[[tf.data.Dataset], tf.data.Dataset] = kit_data.preprocess,
    ):
        self.client_data = client_data
        self.client_ids = list(client_data.client_ids)
        self.preprocess_fn = preprocess_fn

    async def materialize(self, data, type_spec):
        index = parse_client_uri(data.uri, len(self.client_ids))
        dataset = self.client_data.create_tf_dataset_for_client(self.client_ids[index])
        return self.preprocess_fn(dataset)
