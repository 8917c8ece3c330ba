"""The names the kit needs from TFF 0.87 that TFF does not export: the one module that imports them.

Everything else in `tutorial_helpers` uses `tff.*` (and the protocol buffers
of `tensorflow_federated.proto`, TFF's wire format). Each import below says
why no public name serves; if a later TFF exports one, this is the place to
change.
"""

# TFF's sync contexts run each call on an event loop in a thread of this class;
# after an interrupt the kit gives the context a new one (tutorial_helpers.runtime.contexts).
from tensorflow_federated.python.common_libs.async_utils import AsyncThreadRunner

# The executor interface, which DataExecutor implements and
# tff.framework.ResourceManagingExecutorFactory expects: TFF 0.87 exports no name for it.
from tensorflow_federated.python.core.impl.executors.executor_base import Executor

# The TFF type of a value holding tf.data.Datasets (TFF's own executors use it):
# tff.types.tensorflow_to_type takes type specs, not values.
from tensorflow_federated.python.core.impl.types.type_conversions import tensorflow_infer_type

__all__ = ["AsyncThreadRunner", "Executor", "tensorflow_infer_type"]
