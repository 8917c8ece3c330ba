"""Checks for the notebooks' exercises, one module per notebook (`nb02_data_backend` ... `nb10_your_own_data`).

Each check prints a verdict ("Correct!", "Not right yet", or "Not solved
yet") and returns a `CheckResult` (`passed`, the `problems` found, the
`message` printed), which shows nothing more in a notebook's check cell. An
answer still raising NotImplementedError (the exercise as handed out) gets
"not solved yet" and the path of the solution, kept in notebooks/solutions/
so that it is not the first thing a learner sees. Each check is tested with
wrong answers it must refuse (tests/test_exercises.py).
"""

from tutorial_helpers.exercises.common import CheckResult
from tutorial_helpers.exercises.nb02_data_backend import check_even_clients_backend
from tutorial_helpers.exercises.nb03_execution_context import check_label_zero_count
from tutorial_helpers.exercises.nb04_training import check_other_clients
from tutorial_helpers.exercises.nb05_remote_data_service import check_caching_backend
from tutorial_helpers.exercises.nb06_worker_side_loading import check_worker_side_filter
from tutorial_helpers.exercises.nb07_data_stays_at_its_site import check_group_by_site
from tutorial_helpers.exercises.nb08_the_site_decides import check_would_run
from tutorial_helpers.exercises.nb09_what_leaves_a_site import check_rounds_within
from tutorial_helpers.exercises.nb10_your_own_data import check_client_rows

__all__ = ["CheckResult", "check_caching_backend", "check_client_rows", "check_even_clients_backend",
           "check_group_by_site", "check_label_zero_count", "check_other_clients", "check_rounds_within",
           "check_would_run", "check_worker_side_filter"]
