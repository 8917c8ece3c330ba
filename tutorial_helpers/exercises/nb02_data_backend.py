"""Notebook 02's exercise: a backend that serves only even-numbered clients."""

from __future__ import annotations

import tensorflow as tf
from tensorflow_federated.proto.v0 import computation_pb2 as pb

from tutorial_helpers import data as kit_data
from tutorial_helpers.exercises.common import CheckResult, not_yet, run, same_elements, verdict


def check_even_clients_backend(backend, client_data, dataset_type) -> CheckResult:
    """Exercise 02: a backend that serves only even-numbered clients."""
    ids = client_data.client_ids

    async def materialize(uri):
        return await backend.materialize(pb.Data(uri=uri), dataset_type)

    # Derived from the data, not from the sample's size: the first even
    # clients and the last, the first odd ones and the last, one past the end.
    last = len(ids) - 1
    last_even, last_odd = last - last % 2, last - (1 - last % 2)
    problems = []
    for index in sorted({0, 2, 4, last_even} & set(range(len(ids)))):
        uri = f"uri://{index}"
        try:
            dataset = run(materialize(uri))
        except NotImplementedError:
            return not_yet("materialize still raises NotImplementedError.", "02_even_clients.py")
        except Exception as e:  # the learner's code may raise anything
            problems.append(f"{uri} should be served, but raised {type(e).__name__}: {e}")
            continue
        expected = kit_data.preprocess(client_data.create_tf_dataset_for_client(ids[index]))
        if not isinstance(dataset, tf.data.Dataset):
            problems.append(f"{uri} should give a tf.data.Dataset, got {type(dataset).__name__}.")
        elif dataset.element_spec != expected.element_spec:
            problems.append(f"{uri} gave elements {dataset.element_spec}; preprocessed client data "
                            f"has {expected.element_spec}.")
        elif not same_elements(dataset, expected):
            problems.append(f"{uri} should be the data of client {index} ({ids[index]}), preprocessed.")
    refused = [f"uri://{i}" for i in sorted({1, 3, last_odd} & set(range(len(ids))))]
    past_the_end = len(ids) + len(ids) % 2  # Even, so only its range can refuse it.
    # Even numbers that `int()` reads but that are not `uri://<index>`: a sign
    # (Python's ids[-2] is a client counted from the end, odd or even by
    # chance), a leading zero, a space, a digit of another script.
    lenient = {"uri://-2": "int() accepts the sign, and ids[-2] is a client counted from the end",
               "uri://04": "a leading zero", "uri:// 4": "a space", "uri://\u0664": "an Arabic-Indic 4",
               "uri://4x": "a prefix match: the index must be all that follows uri://"}
    for uri in (*refused, "uri://x", f"uri://{past_the_end}", *lenient):
        try:
            run(materialize(uri))
            why = f" ({lenient[uri]}; parse with client_index above)" if uri in lenient else ""
            problems.append(f"{uri!r} should be rejected, but a dataset was returned{why}.")
        except NotImplementedError:
            return not_yet("materialize still raises NotImplementedError.", "02_even_clients.py")
        except Exception as e:
            if uri not in str(e) and repr(uri) not in str(e):
                problems.append(f"The error for {uri!r} should name it; it says: {e}")
    return verdict(problems, "Even clients are served, odd and malformed URIs are refused by name.")
