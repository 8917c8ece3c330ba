"""How long a pilot learner took over each notebook, from the times JupyterLab records.

The learner times in the README are only as good as their measurement: one
person new to TFF, reading every cell, running it and doing the exercise, with
a clock. JupyterLab can be that clock. With its setting *Recording timing* on,
it writes into each code cell, when the cell runs, the moment its code reached
the kernel and the moment the kernel answered (the cell's ``execution``
metadata, kept in the saved notebook). From the saved notebooks this module
tells how the minutes were spent:

* a cell's own run time, and the reading before it (from the answer to the
  cell before to this cell's start) count for the section the cell is in
  (the last ``#`` or ``##`` heading above it): a section of text only, such
  as a summary, counts where the next cell is;
* a gap longer than ``pause_minutes`` (10 by default) is a pause, left out and
  listed;
* the reading before the first cell that ran is not recorded: the clock starts
  there. In the kit's notebooks that is the setup cell, after the title and
  the Overview;
* JupyterLab keeps only a cell's last run, and Run All runs every cell again:
  the pilot runs cells one by one (Shift+Enter). The report says when cells
  ran back to back, out of order, or not at all;
* code cells with nothing to run (only comments, such as the licence) do not
  count.

Before the pilot, in the pilot's clone (their answers are saved into its
notebooks; ``git checkout notebooks/`` puts them back)::

    python -m tutorial_helpers.workshop.pilot record   # Recording timing on
    .venv/bin/jupyter lab notebooks/

After it, with the learner's saved notebooks (ask first: the times say when
they worked)::

    python -m tutorial_helpers.workshop.pilot report notebooks/0[1-5]*.ipynb
    python -m tutorial_helpers.workshop.pilot off      # and off again

Only the standard library and JupyterLab's own settings path are used;
no TensorFlow.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import re
import sys

PAUSE_MINUTES = 10.0
_BACK_TO_BACK = 2.0  # Seconds of reading a cell, on average, below which the cells were run all at once.
SETTING = ("@jupyterlab", "notebook-extension", "tracker")  # The notebook tracker's settings: recordTiming.
_STARTS = ("iopub.execute_input", "shell.execute_reply.started", "iopub.status.busy")  # As JupyterLab 4 writes them.
_ENDS = ("shell.execute_reply", "iopub.status.idle", "execution_failed")
_HEADING = re.compile(r"^(#{1,2})\s+(.+?)\s*$", re.MULTILINE)
_FENCED = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
TURN_ON = ("in JupyterLab, Settings > Settings Editor > Notebook, tick 'Recording timing' (or run "
           "`python -m tutorial_helpers.workshop.pilot record` before JupyterLab starts), then run the "
           "notebook again and save it")


def _only_comments(source: str) -> bool:
    return all(not line.strip() or line.lstrip().startswith("#") for line in source.splitlines())


@dataclasses.dataclass
class Timing:
    """What one pilot notebook says: minutes per section, pauses left out, cells run."""

    path: pathlib.Path
    sections: list[tuple[str, float | None]]  # (heading, seconds, None if none of its cells ran), in order
    pauses: list[float]  # seconds, each longer than the pause limit
    cells_run: int
    cells: int  # code cells with something to run
    out_of_order: int  # cells whose (last) run came after the run of a cell below them
    reading: float  # seconds between cells, pauses left out
    started: datetime.datetime
    ended: datetime.datetime

    @property
    def seconds(self) -> float:
        return sum(seconds for _, seconds in self.sections if seconds is not None)


def _when(execution: dict, keys: tuple[str, ...], path: pathlib.Path, index: int) -> datetime.datetime | None:
    for key in keys:
        if key in execution:
            try:
                moment = datetime.datetime.fromisoformat(str(execution[key]))
            except ValueError:
                raise ValueError(f"{path}: cell {index} has a timing {key}={execution[key]!r} that is not a date "
                                 "and time: was the notebook edited by hand? Run that cell again and save.") from None
            if moment.tzinfo is None:
                raise ValueError(f"{path}: cell {index}'s {key} has no time zone; JupyterLab always writes one "
                                 "(ending in Z). Run that cell again in JupyterLab and save.")
            return moment
    return None


def read(path: str | os.PathLike, pause_minutes: float = PAUSE_MINUTES) -> Timing:
    """Minutes per section of one saved notebook, from JupyterLab's recorded timing.

    Raises ValueError, naming the file and what to do, for a file that is not
    a notebook, one with no recorded timing, or a pause limit that is not
    positive.
    """
    path = pathlib.Path(path)
    if not pause_minutes > 0:
        raise ValueError(f"the pause limit must be a positive number of minutes, not {pause_minutes!r}")
    try:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file; give the pilot learner's saved notebooks") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise ValueError(f"{path} is not a Jupyter notebook (.ipynb) that this can read") from None
    section, order, runs, cells_total = "(before the first heading)", [], [], 0
    for index, cell in enumerate(cells):
        source = "".join(cell.get("source", []))
        if cell.get("cell_type") == "markdown":
            headings = _HEADING.findall(_FENCED.sub("", source))  # A shell comment in a code block is no heading.
            if headings:
                section = headings[-1][1]
            continue
        if cell.get("cell_type") != "code" or _only_comments(source):  # Empty, or a licence: nothing to run.
            continue
        cells_total += 1
        if section not in order:
            order.append(section)
        execution = cell.get("metadata", {}).get("execution", {})
        start, end = _when(execution, _STARTS, path, index), _when(execution, _ENDS, path, index)
        if start is not None and end is not None:
            runs.append((start, max(end, start), section, index))
    if not runs:
        raise ValueError(f"{path}: none of its code cells has the timing JupyterLab records, so there is nothing "
                         f"to measure. Recording timing was off: {TURN_ON}.")
    runs.sort()
    out_of_order, below = 0, -1
    for *_, index in runs:  # A cell whose run came after that of a cell below it.
        out_of_order += index < below
        below = max(below, index)
    limit = pause_minutes * 60
    spent: dict[str, float] = {}
    pauses, reading_total = [], 0.0
    previous_end = None
    for start, end, name, _ in runs:
        reading = 0.0 if previous_end is None else max(0.0, (start - previous_end).total_seconds())
        if reading > limit:
            pauses.append(reading)
            reading = 0.0
        reading_total += reading
        spent[name] = spent.get(name, 0.0) + reading + (end - start).total_seconds()
        previous_end = end if previous_end is None else max(end, previous_end)
    return Timing(path=path, sections=[(name, spent.get(name)) for name in order], pauses=pauses,
                  cells_run=len(runs), cells=cells_total, out_of_order=out_of_order, reading=reading_total,
                  started=runs[0][0], ended=max(end for _, end, *_ in runs))


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def report(timings: list[Timing]) -> str:
    """The text `pilot report` prints: per notebook its minutes, then per section, then the total."""
    lines = []
    for timing in timings:
        pauses = ""
        if timing.pauses:
            pauses = f"; {len(timing.pauses)} pause(s) left out ({', '.join(_minutes(p) for p in timing.pauses)})"
        lines.append(f"{timing.path.name}: {_minutes(timing.seconds)}, {timing.cells_run} of {timing.cells} code "
                     f"cells run, {timing.started:%H:%M} to {timing.ended:%H:%M} UTC{pauses}")
        shown = [(name, "not run" if seconds is None else _minutes(seconds)) for name, seconds in timing.sections]
        width = max(len(text) for _, text in shown)
        lines.extend(f"  {text:>{width}}  {name}" for name, text in shown)
        if timing.cells_run < timing.cells:
            lines.append(f"  {timing.cells - timing.cells_run} code cell(s) have no timing: not run, or run "
                         "before Recording timing was on; the time above leaves them out")
        if timing.out_of_order:
            lines.append(f"  {timing.out_of_order} cell(s) ran after a cell below them: a cell run again keeps "
                         "only its last time, so its section may have gained minutes another section spent")
        if timing.cells_run >= 3 and timing.reading < _BACK_TO_BACK * (timing.cells_run - 1):
            lines.append("  the cells ran back to back, as Run All (or Restart and Run All) runs them: JupyterLab "
                         "kept only that run, so the reading time is lost. The pilot should run cells one by one")
    if len(timings) > 1:
        lines.append(f"Total: {_minutes(sum(t.seconds for t in timings))} over {len(timings)} notebooks")
    lines.append("Not recorded: the reading before each notebook's first cell run (in the kit's notebooks, the "
                 "title and the Overview); pauses over the limit")
    return "\n".join(lines)


def settings_file(settings_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """JupyterLab's user settings file for notebooks (JUPYTERLAB_SETTINGS_DIR, else ~/.jupyter/lab/user-settings)."""
    if settings_dir is None:
        # JupyterLab's own answer, JUPYTERLAB_SETTINGS_DIR included.
        from jupyterlab.commands import get_user_settings_dir

        settings_dir = get_user_settings_dir()
    return pathlib.Path(settings_dir, *SETTING[:2], SETTING[2] + ".jupyterlab-settings")


def set_recording(on: bool, settings_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Turns JupyterLab's *Recording timing* on or off, keeping the file's other settings.

    Takes effect in a JupyterLab started afterwards (or after reloading its page).
    Raises ValueError for a settings file that is not plain JSON (JupyterLab
    allows comments, which this does not rewrite): use the Settings Editor then.
    """
    path = settings_file(settings_dir)
    settings = {}
    if path.exists():
        try:
            settings = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            settings = None
        if not isinstance(settings, dict):
            raise ValueError(f"{path} is not plain JSON (it may have comments), and this command does not rewrite "
                             "it: in JupyterLab, use Settings > Settings Editor > Notebook > 'Recording timing'")
    settings["recordTiming"] = on
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tutorial_helpers.workshop.pilot",
                                     description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("record", help="turn on JupyterLab's Recording timing (for a pilot learner)")
    commands.add_parser("off", help="turn it off again")
    show = commands.add_parser("report", help="minutes per notebook and section from saved notebooks")
    show.add_argument("notebooks", nargs="+", help="the pilot learner's saved .ipynb files, in the order done")
    show.add_argument("--pause", type=float, default=PAUSE_MINUTES,
                      help=f"a gap longer than this many minutes is a pause, left out (default {PAUSE_MINUTES:g})")
    args = parser.parse_args(argv)
    try:
        if args.command == "report":
            print(report([read(path, args.pause) for path in args.notebooks]))
        else:
            path = set_recording(args.command == "record", None)
            state = "on" if args.command == "record" else "off"
            print(f"Recording timing is {state} in {path}; it applies to JupyterLab started (or reloaded) from now.")
    except ValueError as e:
        print(f"pilot: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
