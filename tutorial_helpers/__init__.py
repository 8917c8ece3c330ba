"""Helpers for the "Loading Remote Data in TFF" teaching kit.

Modules, each introduced by the notebook that teaches it:

* `tutorial_helpers.data`: federated EMNIST (full, or a bundled real sample)
  and the tutorial's preprocessing.
* `tutorial_helpers.remote_data`: `DataBackend`, `DataExecutor` and
  `create_execution_context`, the tutorial's programming model on TFF 0.87.
* `tutorial_helpers.worker_process`: a TFF `worker_binary` whose life the kit
  controls.
* `tutorial_helpers.plotting`: `plot_training_curves`.

Submodules are imported on demand, so importing this package does not import
TensorFlow.
"""

__version__ = "0.1.0"
