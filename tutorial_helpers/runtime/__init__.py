"""What runs under the kit's contexts: processes the kit starts, contains and stops, and TFF's internals.

A learner never imports these; `tutorial_helpers.remote_data`,
`worker_process`, `data_service` and `multi_worker` do:

* `processes`: `ManagedProcess`, a child process the kit always stops, and
  the decision whether a worker may run outside a private network.
* `launcher`: the small program between the kit and each child (parent-death
  signal, the private network namespace, the Unix-socket relay).
* `contexts`: what the kit's execution contexts add to TFF's (closing,
  `with` blocks, recovering from Jupyter's interrupt).
* `tff_private`: the few TFF names that TFF does not export, each with why.
"""
