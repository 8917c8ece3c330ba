"""Helpers for the "Loading Remote Data in TFF" teaching kit.

The folder shows who uses what:

* top level, what the notebooks import, each introduced by the notebook that
  teaches it: `data` and `sample` (federated EMNIST, the tutorial's
  preprocessing), `model`, `remote_data` (`DataBackend`, `DataExecutor`,
  `create_execution_context`: the tutorial's programming model on TFF 0.87),
  `backends`, `worker_process` (TFF workers, local or remote),
  `data_service` and `http_backend` (notebook 05), `multi_worker` (06),
  `plotting`, `round_costs`, `expected_results` and `exercises`; `sites`
  (each client's part of a round at its site's worker, notebook 07) and
  `gatekeeper` (what a site lets run on its data);
* `runtime/`: what runs underneath: `processes` and `launcher` (every child
  process the kit starts, contained and always stopped), `contexts` (closing
  and interrupting the kit's contexts), `tff_private` (the TFF names TFF does
  not export);
* `workshop/`: what serves the workshop, not the lesson: `setup_check` (each
  notebook's first cell), `preflight`, `project_links`.

Submodules are imported on demand, so importing this package does not import
TensorFlow.
"""

__version__ = "0.1.0"

# The Jupyter kernel that scripts/setup registers inside .venv and that the
# kit's commands, tests and preflight ask for: written here only (the shell
# scripts read it with `.venv/bin/python -c`).
KERNEL_NAME = "tff-remote-data-kit"
KERNEL_DISPLAY_NAME = "Python 3.11 (TFF 0.87 remote data kit)"
