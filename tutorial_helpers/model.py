"""The tutorial's model and Federated Averaging process.

Notebook 04 builds them step by step; the notebooks after it, the tests and
the benchmarks take them from here. `tests/test_one_source.py` keeps
`create_keras_model` and `model_fn` the same code as notebook 04's.
"""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

# One client's preprocessed data (see `tutorial_helpers.data.preprocess`):
# a sequence of batches of one flattened image and its label.
ELEMENT_TYPE = tff.types.StructWithPythonType(
    [("x", tff.TensorType(np.float32, [1, 784])), ("y", tff.TensorType(np.int32, [1, 1]))],
    collections.OrderedDict,
)
DATASET_TYPE = tff.types.SequenceType(ELEMENT_TYPE)
INPUT_SPEC = collections.OrderedDict(
    x=tf.TensorSpec([1, 784], tf.float32), y=tf.TensorSpec([1, 1], tf.int32)
)


def create_keras_model() -> tf.keras.Model:
    """One dense layer from 784 pixels to 10 digits, starting at zero, and a softmax."""
    return tf.keras.models.Sequential([
        tf.keras.layers.InputLayer(input_shape=(784,)),
        tf.keras.layers.Dense(10, kernel_initializer="zeros"),
        tf.keras.layers.Softmax(),
    ])


def model_fn() -> tff.learning.models.VariableModel:
    """The Keras model wrapped for TFF, with the tutorial's loss and metric."""
    return tff.learning.models.from_keras_model(
        create_keras_model(),
        input_spec=INPUT_SPEC,
        loss=tf.keras.losses.SparseCategoricalCrossentropy(),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
    )


def build_fed_avg(client_learning_rate: float = 0.02, server_learning_rate: float = 1.0):
    """The tutorial's Federated Averaging: client SGD 0.02, server SGD 1.0."""
    return tff.learning.algorithms.build_weighted_fed_avg(
        model_fn,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=client_learning_rate),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=server_learning_rate),
    )
