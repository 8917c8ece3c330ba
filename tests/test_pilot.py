"""`pilot`: the minutes a pilot learner spent, from the timing JupyterLab records.

The end-to-end test runs a small notebook in the kit's real JupyterLab, in
headless Chromium, once with `pilot record` and once with `pilot off`, and
reads what JupyterLab saved. The other tests give `read` notebooks whose
timing has the keys JupyterLab 4.5 writes (seen in its jlab_core bundle and in
the end-to-end test's file), to check the arithmetic and the errors.
"""

import json
import time
from pathlib import Path

import pytest

from tutorial_helpers.workshop import pilot, preflight


def notebook(cells: list[tuple[str, str, dict | None]]) -> dict:
    """A notebook of (kind, source, execution metadata or None) cells."""
    made = []
    for kind, source, execution in cells:
        cell = {"cell_type": kind, "metadata": {}, "source": source}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
            if execution is not None:
                cell["metadata"]["execution"] = execution
        made.append(cell)
    return {"cells": made, "metadata": {"kernelspec": {"name": "tff-remote-data-kit", "language": "python",
                                                        "display_name": "kit"}},
            "nbformat": 4, "nbformat_minor": 5}


def ran(start: str, end: str) -> dict:
    """Execution metadata as JupyterLab 4.5 writes it for a cell run from `start` to `end` (HH:MM:SS)."""
    day = "2026-12-03T"
    return {"iopub.status.busy": f"{day}{start}.010Z", "iopub.execute_input": f"{day}{start}.020Z",
            "shell.execute_reply.started": f"{day}{start}.025Z", "iopub.status.idle": f"{day}{end}.900Z",
            "shell.execute_reply": f"{day}{end}.890Z"}


def write(tmp_path: Path, content: dict, name: str = "n.ipynb") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(content))
    return path


def test_minutes_go_to_the_section_whose_cell_they_precede_and_pauses_are_left_out(tmp_path):
    path = write(tmp_path, notebook([
        ("markdown", "# Title", None),
        ("code", "setup()", ran("10:00:00", "10:00:10")),           # clock starts: 10 s of run
        ("markdown", "## Overview\n\nText.", None),
        ("code", "a = 1", ran("10:03:10", "10:03:11")),             # 3 min reading + 1 s
        ("markdown", "## Exercise", None),
        ("code", "answer = 2", ran("10:10:11", "10:10:12")),        # 7 min + 1 s
        ("code", "check(answer)", ran("10:40:12", "10:40:14")),     # a 30 min pause, then 2 s
        ("code", "", None),                                         # empty: not counted
    ]))
    timing = pilot.read(path)
    # Each cell runs from its execute_input (.020) to its execute_reply (.890).
    assert timing.sections == [("Title", pytest.approx(10.87)), ("Overview", pytest.approx(181.0)),
                               ("Exercise", pytest.approx(421.0 + 2.87))]
    assert timing.pauses == [pytest.approx(1799.13)]
    assert (timing.cells_run, timing.cells, timing.out_of_order) == (4, 4, 0)
    assert timing.seconds == pytest.approx(10.87 + 181.0 + 423.87)
    text = pilot.report([timing])
    assert text.splitlines()[0] == ("n.ipynb: 10 min, 4 of 4 code cells run, 10:00 to 10:40 UTC; "
                                    "1 pause(s) left out (30 min)")
    assert text.splitlines()[-1].startswith("Not recorded: the reading before each notebook's first cell run")
    assert "back to back" not in text
    # A longer pause limit keeps the 30 minutes in the exercise.
    assert pilot.read(path, pause_minutes=45).sections[-1][1] == pytest.approx(421.0 + 1799.13 + 2.87)


def test_a_cell_not_run_and_a_cell_run_again_later_are_reported(tmp_path):
    path = write(tmp_path, notebook([
        ("markdown", "## One", None),
        ("code", "x = 1", ran("09:00:00", "09:00:01")),
        ("code", "y = 2", None),                                    # never ran
        ("markdown", "## Two", None),
        ("code", "z = 3", ran("09:05:00", "09:05:01")),
        ("code", "x = 1  # again", None),
    ]))
    first = pilot.read(path)
    assert (first.cells_run, first.cells, first.out_of_order) == (2, 4, 0)
    assert "2 code cell(s) have no timing" in pilot.report([first])
    # The same notebook with section One's cell run again after section Two's:
    content = json.loads(path.read_text())
    content["cells"][1]["metadata"]["execution"] = ran("09:08:00", "09:08:01")
    again = pilot.read(write(tmp_path, content, "again.ipynb"))
    assert again.out_of_order == 1
    assert "ran after a cell below them" in pilot.report([again])
    assert [name for name, _ in again.sections] == ["One", "Two"]


def test_headings_in_code_blocks_licences_and_sections_not_run(tmp_path):
    path = write(tmp_path, notebook([
        ("code", "#@title Licensed under the Apache License\n# you may not use this file except ...", None),
        ("markdown", "# Title\n\n## Overview", None),
        ("code", "setup()", ran("10:00:00", "10:00:05")),
        ("markdown", "## Elsewhere\n\n```bash\n# then run worker_binary --port=8000\n```", None),
        ("code", "a = 1", ran("10:02:05", "10:02:06")),
        ("markdown", "## Summary\n\nText only.\n\n## Exercise", None),
        ("code", "answer = 2", None),
    ]))
    timing = pilot.read(path)
    assert (timing.cells_run, timing.cells) == (2, 3)  # The licence has nothing to run.
    assert timing.sections == [("Overview", pytest.approx(5.87)), ("Elsewhere", pytest.approx(121.0)),
                               ("Exercise", None)]
    text = pilot.report([timing])
    assert "\n  not run  Exercise\n" in text and "1 code cell(s) have no timing" in text
    assert "then run" not in text


def test_cells_run_back_to_back_or_out_of_order_are_reported(tmp_path):
    cells = [("markdown", "## Run All", None)]
    cells += [("code", f"x{i} = {i}", ran(f"10:00:{i:02d}", f"10:00:{i:02d}")) for i in range(1, 6)]
    run_all = pilot.read(write(tmp_path, notebook(cells), "run_all.ipynb"))
    assert "ran back to back, as Run All" in pilot.report([run_all])
    # Cell 5 first, then 1, 2 and 3 (4 not at all): three cells ran after a cell below them.
    content = notebook([("code", "c1", ran("10:01:00", "10:01:00")), ("code", "c2", ran("10:02:00", "10:02:00")),
                        ("code", "c3", ran("10:03:00", "10:03:00")), ("code", "c4", None),
                        ("code", "c5", ran("10:00:00", "10:00:00"))])
    shuffled = pilot.read(write(tmp_path, content, "shuffled.ipynb"))
    assert shuffled.out_of_order == 3
    assert "3 cell(s) ran after a cell below them" in pilot.report([shuffled])


def test_a_report_of_several_notebooks_ends_with_their_total(tmp_path):
    one = write(tmp_path, notebook([("code", "a", ran("10:00:00", "10:02:00"))]), "01.ipynb")
    two = write(tmp_path, notebook([("code", "b", ran("11:00:00", "11:00:30")),
                                    ("code", "c", ran("11:04:00", "11:04:30"))]), "02.ipynb")
    timings = [pilot.read(one), pilot.read(two)]
    assert [round(t.seconds) for t in timings] == [121, 271]  # 120.87, and 30.87 + 209.13 + 30.87
    assert pilot.report(timings).splitlines()[-2] == "Total: 7 min over 2 notebooks"


@pytest.mark.parametrize("content, message", [
    (notebook([("code", "a", None)]), "none of its code cells has the timing JupyterLab records"),
    (notebook([("code", "a", {"iopub.execute_input": "yesterday", "shell.execute_reply": "today"})]),
     "not a date and time"),
    (notebook([("code", "a", {"iopub.execute_input": "2026-12-03T10:00:00",
                              "shell.execute_reply": "2026-12-03T10:00:01"})]), "no time zone"),
    ({"not": "a notebook"}, "is not a Jupyter notebook"),
])
def test_notebooks_without_usable_timing_are_refused_with_what_to_do(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(ValueError, match=message) as error:
        pilot.read(path)
    assert str(path) in str(error.value)
    if "none of its" in message:
        assert "Recording timing" in str(error.value)


def test_missing_files_and_a_bad_pause_limit_are_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="no such file"):
        pilot.read(tmp_path / "absent.ipynb")
    path = write(tmp_path, notebook([("code", "a", ran("10:00:00", "10:00:01"))]))
    with pytest.raises(ValueError, match="positive number of minutes"):
        pilot.read(path, pause_minutes=0)
    assert pilot.main(["report", str(tmp_path / "absent.ipynb")]) == 2
    assert "pilot: " in capsys.readouterr().err


def test_record_and_off_keep_the_other_settings_and_refuse_a_file_with_comments(tmp_path):
    path = pilot.settings_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"kernelShutdown": True}))
    assert pilot.set_recording(True, tmp_path) == path
    assert json.loads(path.read_text()) == {"kernelShutdown": True, "recordTiming": True}
    pilot.set_recording(False, tmp_path)
    assert json.loads(path.read_text()) == {"kernelShutdown": True, "recordTiming": False}
    commented = '{\n  // mine\n  "recordTiming": false\n}\n'
    path.write_text(commented)
    with pytest.raises(ValueError, match="Settings Editor"):
        pilot.set_recording(True, tmp_path)
    assert path.read_text() == commented  # Left exactly as it was.


PILOT = notebook([
    ("markdown", "# A pilot", None),
    ("code", "import time", None),
    ("markdown", "## Reading", None),
    ("code", "time.sleep(2)", None),
    ("markdown", "## Exercise", None),
    ("code", "print('done')", None),
])


def _run_cells_and_save(browser, url: str, path: Path) -> dict:
    """Opens the notebook in JupyterLab, runs its cells one by one as a learner would, saves it, returns the file.

    It drives JupyterLab through its own commands (the server exposes its app
    to the page), as JupyterLab's own UI tests do, rather than by clicking menus.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def command(name: str) -> None:
        outcome = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "window.jupyterapp.commands.execute(arguments[0]).then(() => done('ok'), e => done(String(e)));", name)
        assert outcome == "ok", (name, outcome)

    def save() -> None:
        # Saved through the notebook's own document, named by its path: JupyterLab's `docmanager:save`
        # saves the *current* widget, and a headless window that never has focus may have none
        # (Chromium 150 and later then answer "TypeError: Invalid value used as weak map key").
        outcome = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "const panels = Array.from(window.jupyterapp.shell.widgets('main'))"
            "  .filter(w => w.context && w.context.path === arguments[0]);"
            "if (panels.length !== 1) { done('open notebooks at ' + arguments[0] + ': ' + panels.length); return; }"
            "panels[0].context.save().then(() => done('ok'), e => done(String(e)));", path.name)
        assert outcome == "ok", ("save", outcome)

    before = path.stat().st_mtime_ns
    browser.get(url)
    wait = WebDriverWait(browser, 90)
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-CodeCell"))
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']"))
    browser.set_script_timeout(60)
    for _ in PILOT["cells"]:  # From the first cell down, a pause to read before each.
        time.sleep(1)
        command("notebook:run-cell-and-select-next")
    wait.until(lambda b: "done" in b.find_element(By.CSS_SELECTOR, ".jp-Notebook").text
               and not [p for p in b.find_elements(By.CSS_SELECTOR, ".jp-InputPrompt") if "*" in p.text])
    save()
    deadline = time.monotonic() + 30
    while path.stat().st_mtime_ns == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert path.stat().st_mtime_ns != before, "JupyterLab did not save the notebook within 30 s"
    return json.loads(path.read_text())


@pytest.mark.browser
def test_jupyterlab_records_what_pilot_reads_only_when_recording_is_on(tmp_path, monkeypatch, browser):
    # Not the user's own settings, nor their saved layouts, which JupyterLab would restore and add to.
    monkeypatch.setenv("JUPYTERLAB_SETTINGS_DIR", str(tmp_path / "settings"))
    monkeypatch.setenv("JUPYTERLAB_WORKSPACES_DIR", str(tmp_path / "workspaces"))
    folder = tmp_path / "notebooks"
    folder.mkdir()
    path = write(folder, PILOT, "pilot.ipynb")
    assert pilot.main(["record"]) == 0
    with preflight.jupyterlab_server(timeout=90, notebook_dir=folder,
                                     extra_args=("--LabApp.expose_app_in_browser=True",)) as (base, token, _):
        saved = _run_cells_and_save(browser, f"{base}/lab/tree/pilot.ipynb?token={token}", path)
        timing = pilot.read(path)
        assert (timing.cells_run, timing.cells) == (3, 3), saved
        assert set(saved["cells"][3]["metadata"]["execution"]) >= {"iopub.execute_input", "shell.execute_reply"}
        sections = dict(timing.sections)
        assert list(sections) == ["A pilot", "Reading", "Exercise"]
        assert 3 <= sections["Reading"] < 30  # A second to read, then the cell sleeps 2 s.
        assert timing.seconds < 90 and not timing.pauses and timing.out_of_order == 0
        # The control: with recording off, JupyterLab drops the timing when a cell runs again.
        assert pilot.main(["off"]) == 0
        _run_cells_and_save(browser, f"{base}/lab/tree/pilot.ipynb?token={token}", path)
        with pytest.raises(ValueError, match="Recording timing was off"):
            pilot.read(path)
