"""Notebook 06's exercise: a filter that runs at the worker, on the worker's data."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tutorial_helpers import data as kit_data
from tutorial_helpers.exercises.common import CheckResult, client_indices, not_right, not_yet, span, verdict


def check_worker_side_filter(preprocess_fn, client_data, dataset_type, num_clients: int = 3) -> CheckResult:
    """Exercise 06: a preprocessing function, run in a TFF worker, that keeps digits 0 to 4.

    Builds the dataset computation of `client_data.preprocess(preprocess_fn)`,
    composes it with a computation that counts the labels of the clients'
    examples, runs that on the first `num_clients` clients in a one-worker
    context (the controller sends only their ids), and compares with the
    tutorial's preprocessing of the examples labelled 0 to 4, done here.
    """
    from tutorial_helpers.multi_worker import create_multi_worker_context

    indices = client_indices(client_data, range(num_clients), "num_clients")
    ids = [client_data.client_ids[i] for i in indices]
    try:
        local = preprocess_fn(client_data.create_tf_dataset_for_client(ids[0]))
    except NotImplementedError:
        return not_yet("keep_digits_0_to_4 still raises NotImplementedError.", "06_worker_side_filter.py")
    except Exception as e:  # the learner's code may raise anything
        return not_right(f"On a client's raw dataset it raised {type(e).__name__}: {e}")
    spec = getattr(local, "element_spec", None)
    element_type = tff.types.tensorflow_to_type(spec) if spec is not None else None
    if element_type is None or not dataset_type.element.is_assignable_from(element_type):
        return not_right(f"The function should return a dataset of {dataset_type.element}, "
                          f"as the learning process takes; it returned "
                          f"{spec if spec is not None else local!r}. Apply the tutorial's "
                          "preprocessing (data.preprocess) to what you keep.")

    # What the worker reports of each client's dataset: its label counts, the
    # sum of its labels weighted by position (which changes when the order
    # does: no shuffle, or a shuffle of other elements) and the sum of its
    # pixels (which changes when they are scaled again). Summed over the
    # clients, the controller receives these 12 numbers and no example.
    @tff.tensorflow.computation(dataset_type)
    def fingerprint(dataset):
        def add(state, batch):
            counts, position, weighted, pixels = state
            labels = tf.reshape(batch["y"], [-1])
            counts += tf.math.bincount(labels, minlength=10, maxlength=10, dtype=tf.int32)
            weighted += (position + 1) * tf.cast(tf.reduce_sum(labels), tf.int64)
            pixels += tf.reduce_sum(tf.cast(batch["x"], tf.float64))
            return counts, position + 1, weighted, pixels

        counts, _, weighted, pixels = dataset.reduce(
            (tf.zeros([10], tf.int32), tf.constant(0, tf.int64), tf.constant(0, tf.int64),
             tf.constant(0.0, tf.float64)), add)
        return counts, weighted, pixels

    @tff.federated_computation(tff.FederatedType(dataset_type, tff.CLIENTS))
    def total_fingerprint(datasets):
        return tff.federated_sum(tff.federated_map(fingerprint, datasets))

    dataset_computation = client_data.preprocess(preprocess_fn).dataset_computation
    on_workers = tff.simulation.compose_dataset_computation_with_computation(
        dataset_computation, total_fingerprint)
    with create_multi_worker_context(1) as ctx:
        counts, weighted, pixels = on_workers(ids)
        sent = ctx.client_value_bytes
    counts, weighted, pixels = np.asarray(counts), int(weighted), float(pixels)
    expected_counts, expected_weighted, expected_pixels = np.zeros(10, np.int64), 0, 0.0
    for client_id in ids:
        raw = client_data.create_tf_dataset_for_client(client_id)
        batches = kit_data.preprocess(raw.filter(lambda e: e["label"] < 5)).as_numpy_iterator()
        for position, batch in enumerate(batches, start=1):
            expected_counts += np.bincount(batch["y"].reshape(-1), minlength=10)
            expected_weighted += position * int(batch["y"].sum())
            expected_pixels += float(batch["x"].astype(np.float64).sum())
    problems = []
    if counts[5:].any():
        problems.append(f"Examples labelled 5 to 9 reached the training: {counts[5:].sum()} of them "
                        f"(labels 0-9: {counts.tolist()}). Filter on the raw example's 'label'.")
    if not np.array_equal(counts[:5], expected_counts[:5]):
        problems.append(f"Digits 0 to 4 should count {expected_counts[:5].tolist()} on clients "
                        f"{span(indices)} ({kit_data.NUM_EPOCHS} epochs, as the tutorial's "
                        f"preprocessing repeats them); the worker counted {counts[:5].tolist()}.")
    elif not np.isclose(pixels, expected_pixels, rtol=1e-6):
        problems.append(f"The right digits, but not the tutorial's pixels: they add up to {pixels:,.1f} "
                        f"instead of {expected_pixels:,.1f}. The raw pixels are already in [0, 1]: "
                        "pass them to data.preprocess unchanged.")
    elif weighted != expected_weighted:
        problems.append("The right examples, in another order than the tutorial's preprocessing "
                        "gives: filter the raw examples first, then apply data.preprocess (which "
                        "repeats and shuffles) to what you keep.")
    return verdict(problems, f"The worker kept {int(counts.sum())} examples labelled 0 to 4 "
                       f"({kit_data.NUM_EPOCHS} epochs) of clients {span(indices)}, and the "
                       f"controller sent only their ids ({sent} bytes).")
