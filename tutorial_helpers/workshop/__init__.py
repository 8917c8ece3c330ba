"""What serves the workshop rather than the lesson: checks of a learner's machine and the kit's links.

* `setup_check`: what each notebook's first cell runs: where it runs, and what to do.
* `preflight`: what `scripts/preflight` runs before the day.
* `project_links`: the kit's addresses in the README, the notebooks' buttons and first cells.
* `pilot`: how long a pilot learner took over each notebook, from the times JupyterLab records.
"""
