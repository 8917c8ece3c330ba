"""A site's gatekeeper: what stands in front of its TFF worker and decides what runs on its data.

A `worker_binary` runs any computation it is sent, `tf.io.read_file` of the
site's files included (notebook 07 shows it). TFF has nothing in front of
it; this package is the kit's answer. The gatekeeper is a gRPC proxy that
speaks TFF's executor protocol (`tensorflow_federated.v0.ExecutorGroup`,
the service `worker_binary` serves). It runs at the site, next to the
worker, in the same private network, and is the only way in for anyone but
the worker's own user (see "What it does not stop" below).

* Each call passes a chain of *incoming checks* (`checks`): only calls
  whose meaning was reviewed, no dataset from outside (a site loads its own
  data), only computations whose *fingerprint* (`fingerprints`) is on the
  site's approval list, and pinned values (a learning rate) as pinned
  (`policy`: `approved.txt` and `pins.txt`, read again whenever they change).
* The worker's answer passes a chain of *outgoing filters*: the site's
  minimum number of clients in a round (`limits.txt`), its noise on a
  round's update sum and its privacy budget (`release`), and its limit on an
  answer's size, if it has them.
* One line per call goes to the site's audit log (`audit_log`).
* With mutual TLS, only the controller's certificate gets in (`proxy.ControllerOnly`).

What it does not stop. A site that approves a training round approves the
release of that round's output: model updates, metrics and counts, which
are computed from its examples. The result cap cannot tell an update from a
leak of the same size. With ``noise_multiplier`` (`release`), what leaves
is a clipped, noised update sum and nothing else, and the budget bounds how
much all rounds together tell about any one client, as
(epsilon, delta)-differential privacy; `release` states that bound's limits.
On one machine as one user, that user owns the approval list and the log,
and can reach the worker without the gatekeeper;
only a user per site (the kit's root path) makes the gatekeeper the only way in.

Modules: `fingerprints`, `policy`, `audit_log`, `ledger` (what the worker
holds, for the pin check), `checks`, `release` (noise and budget),
`proxy` (the gRPC servicer and the authentication), `spec` (`Gatekeeper`),
`serve` (the process and its commands). Importing this package imports no TensorFlow.
"""

from tutorial_helpers.sites.gatekeeper.audit_log import (
    AUDIT_LOG,
    AuditLog,
    BrokenAuditLog,
    audit_log_problems,
    read_audit_log,
)
from tutorial_helpers.sites.gatekeeper.checks import (
    REVIEWED_METHODS,
    SERVICE,
    Call,
    Refused,
    Unauthenticated,
    executor_methods,
)
from tutorial_helpers.sites.gatekeeper.fingerprints import fingerprint, site_part
from tutorial_helpers.sites.gatekeeper.policy import (
    APPROVALS,
    LIMITS_FILE,
    PINS,
    Policy,
    approve,
    pin,
    read_approvals,
    read_limits,
    read_pins,
    read_trusted_controller,
    set_limits,
    trust_controller,
)
from tutorial_helpers.sites.gatekeeper.spec import GATEKEEPER_PORT, Gatekeeper

__all__ = ["APPROVALS", "AUDIT_LOG", "GATEKEEPER_PORT", "LIMITS_FILE", "PINS", "REVIEWED_METHODS", "SERVICE",
           "AuditLog", "BrokenAuditLog", "Call", "Gatekeeper", "Policy", "Refused", "Unauthenticated",
           "approve", "audit_log_problems", "executor_methods", "fingerprint", "pin", "read_approvals",
           "read_audit_log", "read_limits", "read_pins", "read_trusted_controller", "set_limits", "site_part",
           "trust_controller"]
