"""Helpers for the "Loading Remote Data in TFF" teaching kit.

The folder shows who uses what:

* top level, what the notebooks import, each introduced by the notebook that
  teaches it: `data` (federated EMNIST, the tutorial's preprocessing; with
  `sample`, the bundled sample it reads), `model`, `remote_data`
  (`DataBackend`, `DataExecutor`, `create_execution_context`: the
  tutorial's programming model on TFF 0.87), `backends`, `worker_process`
  (TFF workers, local or remote), `data_service` and `http_backend`
  (notebook 05), `multi_worker` (06), `plotting`, `round_costs`,
  `expected_results` and `exercises`; and three commands by their short
  names, `gatekeeper`, `tls` and `site_server`, whose code is in `sites/`;
* `sites/`: data that stays at its site and a site that decides what runs on
  it (notebooks 07 and 08): routing, the site's worker, its gatekeeper,
  mutual TLS, a site on a machine of its own;
* `runtime/`: what runs underneath: `processes` and `launcher` (every child
  process the kit starts, contained and always stopped), `workers` (what a
  context needs of a worker), `contexts` (closing and interrupting the
  kit's contexts), `tff_private` (the TFF names TFF does not export);
  nothing in it imports the layers above;
* `workshop/`: what serves the workshop, not the lesson: `setup_check` (each
  notebook's first cell), `preflight`, `project_links`, `pilot`.

Submodules are imported on demand, so importing this package does not import
TensorFlow.
"""

__version__ = "0.1.0"

# The Jupyter kernel that scripts/setup registers inside .venv and that the
# kit's commands, tests and preflight ask for: written here only (the shell
# scripts read it with `.venv/bin/python -c`).
KERNEL_NAME = "tff-remote-data-kit"
KERNEL_DISPLAY_NAME = "Python 3.11 (TFF 0.87 remote data kit)"
