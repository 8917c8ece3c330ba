"""Sites: data that stays where it is, a site that decides what runs on it and what leaves it (notebooks 07 to 09).

* `data`: a site's data on disk (`write_site`, its catalogue), and the
  computation that loads a client at its site (`site_dataset_computation`).
* `routing`: `SiteContext`, which sends each client of a round to its
  site's worker and merges on an aggregator; `plan_round`, `sample_clients`.
* `context`: `create_site_context`, from a `SiteSpec` per site.
* `worker`: `SiteWorker`, a site's worker behind its gatekeeper.
* `gatekeeper/`: what runs on the site's data (approvals, pins, the audit
  log, chains of checks on what comes in and goes out).
* `audit`: `ChannelAudit`, what the controller's side of a channel carried.
* `own_view`: `examples_at_site`, a site's own look at its examples (notebook 09).
* `tls`: a workshop's certificate authority, mutual TLS.
* `server`: one site on a machine of its own (``python -m tutorial_helpers.site_server``).
* `workspace`: `SiteWorkspace`, the one folder that holds everything of a site.

The names below are importable from `tutorial_helpers.sites` itself; each
module is imported when one of its names is first used, so that a site's
gatekeeper process, which lives in this package, imports no TensorFlow.
"""

import importlib

_NAMES = {
    "data": ["CATALOGUE", "CLIENTS_FOLDER", "build_site_dp_fed_avg", "build_site_fed_avg", "build_site_fed_eval",
             "client_file", "dp_fed_avg_computations", "example_probes", "fed_avg_computations", "read_catalogue",
             "read_features", "site_dataset_computation", "write_site"],
    "routing": ["PING_TIMEOUT", "RoundReport", "SiteContext", "catalogue_index", "plan_round", "sample_clients"],
    "context": ["SiteSpec", "create_site_context", "site_specs", "start_site"],
    "worker": ["RemoteSite", "SiteWorker"],
    "audit": ["ChannelAudit"],
    "workspace": ["SiteWorkspace"],
    "own_view": ["examples_at_site"],
}
_MODULE_OF = {name: module for module, names in _NAMES.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *__all__])
