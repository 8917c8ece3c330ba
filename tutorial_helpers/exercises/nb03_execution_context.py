"""Notebook 03's exercise: a computation that counts the examples labelled 0."""

from __future__ import annotations

import numpy as np
import tensorflow_federated as tff

from tutorial_helpers import data as kit_data
from tutorial_helpers.exercises.common import CheckResult, client_indices, not_yet, span, verdict


def check_label_zero_count(count_label_zero, dataset_type, client_data, num_clients: int = 5) -> CheckResult:
    """Exercise 03: a federated computation counting the examples labelled 0.

    Runs it on the first `num_clients` clients of `client_data` (at least 1,
    at most as many as it has) and compares with a count made here.
    """
    if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)):
        raise TypeError(f"num_clients must be an int, got {num_clients!r}.")
    indices = client_indices(client_data, range(num_clients), "num_clients")
    uris = [f"uri://{i}" for i in indices]
    handle = tff.framework.CreateDataDescriptor(arg_uris=uris, arg_type=dataset_type)
    try:
        answer = count_label_zero(handle)
    except NotImplementedError:
        return not_yet("count_label_zero still raises NotImplementedError.", "03_label_zero.py")
    expected = 0
    for client_id in (client_data.client_ids[i] for i in indices):
        for example in kit_data.preprocess(client_data.create_tf_dataset_for_client(client_id)):
            expected += int(example["y"][0, 0] == 0)
    problems = []
    result_type = getattr(getattr(count_label_zero, "type_signature", None), "result", None)
    if not isinstance(count_label_zero, tff.Computation):
        problems.append("count_label_zero should be a TFF computation (@tff.federated_computation).")
    elif not (isinstance(result_type, tff.FederatedType) and result_type.placement is tff.SERVER):
        problems.append(f"The result should be one number placed at the server (int32@SERVER); "
                        f"its type is {result_type}. Did you sum over the clients?")
    else:
        try:
            if int(answer) != expected:
                problems.append(f"Clients {span(indices)} hold {expected} batches labelled 0 "
                                f"(epochs included); the computation returned {int(answer)}.")
        except (TypeError, ValueError):
            problems.append(f"The computation returned {answer!r}, not a number.")
    return verdict(problems, f"{expected} examples labelled 0 on clients {span(indices)}.")
