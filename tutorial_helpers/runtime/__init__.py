"""What runs under the kit's contexts: processes the kit starts, contains and stops, and TFF's internals.

Modules of the package's top level and of `sites/` import these; nothing in
here imports them. A learner meets one name: `processes.temporary_folder`,
where notebooks 07 and 08 keep their sites' data (it goes even when the
kernel is killed).

* `processes`: `ManagedProcess`, a child process the kit always stops;
  `temporary_folder`; `decide_containment`, the one place the kit decides
  whether a worker runs in a private network.
* `launcher`: the small program between the kit and each child (parent-death
  signal, the private network namespace, the Unix-socket relay), and the
  process plumbing the kit's servers share (waiting for a port, relaying,
  running until stopped, ending as a child ended).
* `workers`: `Worker`, what a context needs of a TFF worker; where TFF's
  `worker_binary` is; the gRPC options every channel uses.
* `accounts`: `resolve_user`, the account a site's worker runs as.
* `contexts`: what the kit's execution contexts add to TFF's (closing,
  `with` blocks, recovering from Jupyter's interrupt).
* `tff_private`: the few TFF names that TFF does not export, each with why.
"""
