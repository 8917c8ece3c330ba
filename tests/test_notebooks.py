"""The notebooks follow TensorFlow's docs conventions and store a clean, real run.

nbval (in the README's test command) executes them and compares outputs; these
tests check what nbval does not: format, structure, and the stored outputs.
"""

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
WALKTHROUGH = ["01_preprocessing", "02_data_backend", "03_execution_context", "04_training"]
BEYOND = ["05_remote_data_service", "06_worker_side_loading", "07_data_stays_at_its_site", "08_the_site_decides",
          "09_what_leaves_a_site", "10_your_own_data"]


def load(path):
    return json.loads(path.read_text())


def source(cell):
    return "".join(cell["source"])


def test_all_notebooks_are_there():
    names = {p.stem for p in PATHS}
    assert set(WALKTHROUGH) | set(BEYOND) | {"loading_remote_data"} <= names


@pytest.mark.process
def test_notebooks_are_formatted_with_nbfmt():
    result = subprocess.run(
        [sys.executable, "-m", "tensorflow_docs.tools.nbfmt", "--test", *map(str, PATHS)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_docs_conventions(path):
    cells = load(path)["cells"]
    assert "Copyright" in source(cells[0])
    assert source(cells[1]).startswith("#@title Licensed under the Apache License")
    assert source(cells[2]).startswith("# ")  # Title.
    buttons = source(cells[3])
    for link in ("tensorflow.org", "colab.research.google.com", "github.com", "Download notebook"):
        assert link in buttons
    assert path.name in buttons
    headings = [source(c).split("\n")[0] for c in cells if c["cell_type"] == "markdown"]
    assert "## Overview" in headings and "## Setup" in headings
    assert headings.index("## Overview") < headings.index("## Setup")


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_stored_outputs_are_a_clean_run_in_order(path):
    code = [c for c in load(path)["cells"] if c["cell_type"] == "code"]
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), "run top to bottom in a fresh kernel"
    for cell in code:
        for output in cell["outputs"]:
            assert output["output_type"] != "error", source(cell)[:80]
            assert output.get("name") != "stderr", source(cell)[:80]
            # A progress bar is stored as its last state (scripts/run_tutorial
            # coalesces the streams), not as every redraw.
            assert "\r" not in "".join(output.get("text", "")), source(cell)[:80]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_every_code_cell_is_explained(path):
    cells = load(path)["cells"][4:]
    for previous, cell in itertools.pairwise(cells):
        if cell["cell_type"] == "code" and previous["cell_type"] == "code":
            # Two code cells in a row are allowed only for an exercise and its check.
            assert "check_" in source(cell), source(cell)[:80]


@pytest.mark.parametrize("name", WALKTHROUGH[1:])
def test_walkthrough_ends_with_an_exercise_and_its_check(name):
    cells = load(NOTEBOOKS / f"{name}.ipynb")["cells"]
    assert source(cells[-3]).startswith("## Exercise")
    assert "Your code here" in source(cells[-2])
    assert re.search(r"check_\w+\(", source(cells[-1]))
    solution = re.search(r"notebooks/solutions/(\S+\.py)", json.dumps(cells[-1]["outputs"]))
    assert solution and (NOTEBOOKS / "solutions" / solution.group(1)).is_file()


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_notebooks_are_valid_nbformat(path):
    import nbformat

    nbformat.validate(nbformat.read(path, as_version=4))


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_overview_states_prerequisites_and_time(path):
    overview = next(source(c) for c in load(path)["cells"] if source(c).startswith("## Overview"))
    assert "**Prerequisites:**" in overview
    assert re.search(r"\*\*Time:\*\* \d+ to \d+ minutes", overview)


TIME = re.compile(r"(\d+) to (\d+) min")


def _learner_times() -> dict[str, dict[str, tuple[int, int]]]:
    """Each notebook's (low, high) minutes as the README, the instructor guide and its Overview give them."""
    readme = (NOTEBOOKS.parent / "README.md").read_text()
    guide = (NOTEBOOKS.parent / "docs" / "instructor_guide.md").read_text()
    times = {"README": {}, "guide": {}, "Overview": {}}
    for path in PATHS:
        name = path.stem
        row = re.search(rf"^\| `{name}` \|.*\| ([^|]*) \| [^|]* \|$", readme, re.MULTILINE)
        times["README"][name] = tuple(map(int, TIME.search(row.group(1)).groups()))
        row = re.search(rf"^\| \[{name}\]\([^)]*\) \| ([^|]*) \|", guide, re.MULTILINE)
        times["guide"][name] = tuple(map(int, TIME.search(row.group(1)).groups()))
        overview = next(source(c) for c in load(path)["cells"] if source(c).startswith("## Overview"))
        times["Overview"][name] = tuple(map(int, re.search(r"\*\*Time:\*\* (\d+) to (\d+) minutes",
                                                           overview).groups()))
    return times


def test_learner_times_agree_in_the_readme_the_guide_and_each_overview():
    times = _learner_times()
    assert times["guide"] == times["README"] and times["Overview"] == times["README"], times
    assert all(low < high for low, high in times["README"].values())


@pytest.mark.parametrize("plan, total", [("### Two hours", 120), ("### Three hours", 180)])
def test_the_guides_workshop_plans_use_the_higher_times_and_fill_their_hours(plan, total):
    guide = (NOTEBOOKS.parent / "docs" / "instructor_guide.md").read_text()
    section = guide[guide.index(plan):].split("\n### ", 1)[0]
    rows = re.findall(r"^\| (\d:\d\d)-(\d:\d\d) \| [^|]* \| (\d\d|-) \| (\d+) \|", section, re.MULTILINE)
    assert rows, f"no schedule table under {plan}"
    high = {name[:2]: times[1] for name, times in _learner_times()["README"].items()}
    clock = 0
    for start, end, notebook, minutes in rows:
        begin, finish = (int(t[0]) * 60 + int(t[2:]) for t in (start, end))
        assert begin == clock and finish - begin == int(minutes), (start, end, minutes)
        if notebook != "-":
            assert int(minutes) == high[notebook], (notebook, minutes, high[notebook])
        clock = finish
    assert clock == total


MAX_CODE_LINES = 20  # "About 15": a class with its methods may need a few more.


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_code_cells_are_short(path):
    for cell in load(path)["cells"][2:]:  # The licence cell is exempt.
        text = source(cell)
        if cell["cell_type"] == "code" and not text.startswith("#@title"):
            assert text.count("\n") < MAX_CODE_LINES, text[:80]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_outputs_carry_no_long_paths_or_type_dumps(path):
    for cell in load(path)["cells"]:
        for output in cell.get("outputs", []):
            text = output.get("text") or output.get("data", {}).get("text/plain", "")
            for line in "".join(text).splitlines():
                # Progress bars redraw on one line; their parts are short.
                assert len(line) <= 200 or "it/s]" in line or "s/it]" in line, line[:120]
                longest = max(line.split(), key=len, default="")
                assert len(longest) <= 100, longest


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_images_the_notebooks_show_are_in_the_repository(path):
    for cell in load(path)["cells"]:
        for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", source(cell)):
            image = NOTEBOOKS / target
            assert image.is_file(), target
            assert "figures/" not in target, "figures/ holds what the notebooks draw; it is not committed"
            if image.suffix == ".svg":
                import xml.etree.ElementTree as ET

                root = ET.parse(image).getroot()
                assert root.get("viewBox") and root.find("{http://www.w3.org/2000/svg}title") is not None
                # Self-contained: it must show the same from disk, Colab or a docs site.
                assert not list(root.iter("{http://www.w3.org/2000/svg}script"))
                assert "http" not in image.read_text().replace("http://www.w3.org/", "")


def nblint(tmp_path, *extra):
    """Runs TensorFlow's nblint on every notebook with the kit's arguments.

    nblint derives the buttons' expected paths from the notebook's absolute
    path (a folder named site, docs or g3doc anywhere above changes them), so
    it reads copies in a folder of known names, as at the repository's root.
    """
    import shutil

    from tutorial_helpers.workshop import project_links

    root = tmp_path / "kit"
    (root / "notebooks").mkdir(parents=True)
    for path in PATHS:
        shutil.copy(path, root / "notebooks" / path.name)
    urls = project_links.read_urls()
    result = subprocess.run(
        [sys.executable, "-m", "tensorflow_docs.tools.nblint", f"--arg=repo:{urls.repo}",
         f"--arg=branch:{project_links.BRANCH}", f"--arg=base_url:{urls.site}", *extra,
         *(str(p.relative_to(NOTEBOOKS.parent)) for p in PATHS)],
        cwd=root, capture_output=True, text=True, check=False,
    )  # fmt: skip
    # One "Pass | style::lint | ..." or "Fail | ..." line per lint and notebook.
    plain = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)
    verdicts = []  # (notebook, Pass or Fail, style::lint)
    for block in re.split(r"^Lint notebook: ", plain, flags=re.M)[1:]:
        notebook = block.splitlines()[0].strip()
        verdicts += [(notebook, *v) for v in re.findall(r"^(Pass|Fail) \| (\S+::\S+)", block, re.M)]
    return result, plain, verdicts


def excluded_lints() -> dict[str, str]:
    import tomllib

    config = tomllib.loads((NOTEBOOKS.parent / "pyproject.toml").read_text())
    return config["tool"]["kit"]["nblint-exclude"]


@pytest.mark.process
def test_notebooks_pass_tensorflows_nblint_but_the_listed_exclusions(tmp_path):
    excluded = excluded_lints()
    assert excluded and all(len(reason) > 40 for reason in excluded.values()), "each exclusion says why"
    result, plain, verdicts = nblint(tmp_path, *(f"--exclude_lint={lint}" for lint in excluded))
    assert result.returncode == 0, plain[-3000:] + result.stderr[-2000:]
    assert not [v for v in verdicts if v[1] == "Fail"]
    assert {notebook for notebook, *_ in verdicts} == {f"notebooks/{p.name}" for p in PATHS}
    ran = {lint for *_, lint in verdicts}
    # The buttons' own checks ran, with the kit's repository, branch and site.
    assert {"tensorflow::button_colab", "tensorflow::button_github", "tensorflow::button_website",
            "tensorflow::license_check", "google::second_person"} <= ran
    assert len(verdicts) == len(ran) * len(PATHS)
    assert not ran & set(excluded)


@pytest.mark.process
def test_each_excluded_lint_still_fails_and_nothing_else_does(tmp_path):
    # In every notebook: an exclusion that one notebook no longer needs shows.
    _, plain, verdicts = nblint(tmp_path)
    for path in PATHS:
        failing = {lint for notebook, verdict, lint in verdicts
                   if notebook == f"notebooks/{path.name}" and verdict == "Fail"}
        assert failing == set(excluded_lints()), (path.name, plain[-3000:])


def _sanitize(text: str) -> str:
    """nbval's sanitizing with the kit's rules (notebooks/nbval_sanitize.cfg), read by nbval itself."""
    from nbval.plugin import get_sanitize_patterns

    rules = get_sanitize_patterns((NOTEBOOKS / "nbval_sanitize.cfg").read_text())
    assert len(rules) == (NOTEBOOKS / "nbval_sanitize.cfg").read_text().count("\nregex: ")
    for regex, replace in rules:
        text = re.sub(regex, replace, text)
    return text


def _stored_text(name: str) -> str:
    cells = json.loads((NOTEBOOKS / name).read_text())["cells"]
    return "\n".join("".join(output.get("text", "")) for cell in cells for output in cell.get("outputs", [])
                     if output.get("output_type") == "stream")


def _compared_outputs() -> list[str]:
    """Every stored text nbval compares: streams and plain-text results, of every notebook."""
    return ["".join(output.get("text", "")) + "".join(output.get("data", {}).get("text/plain", ""))
            for path in PATHS for cell in json.loads(path.read_text())["cells"]
            for output in cell.get("outputs", [])]


def test_every_sanitizing_rule_masks_some_stored_output():
    """A rule that no stored output matches is stale: the output it was written for has been reworded, and
    what it masked is compared digit by digit again (notebook 07's bytes per worker were, for four days)."""
    from nbval.plugin import get_sanitize_patterns

    outputs = _compared_outputs()
    config = (NOTEBOOKS / "nbval_sanitize.cfg").read_text()
    names = re.findall(r"(?m)^\[(.+)\]$", config)
    rules = get_sanitize_patterns(config)
    assert len(names) == len(rules)
    stale = [name for name, (regex, _) in zip(names, rules, strict=True)
             if not any(re.search(regex, text) for text in outputs)]
    assert not stale, f"rules in nbval_sanitize.cfg that match no stored output: {stale}"


def test_nbval_masks_notebook_07s_bytes_per_worker_and_compares_its_clients():
    text = _stored_text("07_data_stays_at_its_site.ipynb")
    line = re.search(r"(?m)^ +hospital +was sent +([\d.]+) KiB, sent back +([\d.]+) KiB$", text)
    assert line, "07's bytes per worker are not in the stored outputs"
    moved = line.group(0).replace(line.group(1), "148", 1).replace(line.group(2), "31.0", 1)
    assert _sanitize(text.replace(line.group(0), moved, 1)) == _sanitize(text)
    clients = re.search(r"clients \{'hospital': (\d+)", text)
    other = clients.group(0).replace(clients.group(1), str(int(clients.group(1)) + 1))
    assert _sanitize(text.replace(clients.group(0), other, 1)) != _sanitize(text)


def test_nbval_masks_the_kits_training_digits_and_compares_the_originals():
    text = _stored_text("04_training.ipynb")
    row = re.search(r"\n +1 +(0\.\d{3}) +(\d+\.\d{2}) +1440 \| +(0\.116) +(12\.68)", text)
    assert row, "04's table with the original's figures is not in the stored outputs"
    # The kit's own figures of another CPU: the same after masking.
    other_row = row.group(0).replace(row.group(1), "0.107", 1).replace(row.group(2), "12.02", 1)
    other_cpu = text.replace(row.group(0), other_row)
    assert _sanitize(other_cpu) == _sanitize(text)
    evaluation = re.search(r"(never trained on +10111 +)(0\.\d{3})", text)
    assert _sanitize(text.replace(evaluation.group(0), evaluation.group(1) + "0.561")) == _sanitize(text)
    # The original tutorial's printed figures and the example counts are compared.
    assert _sanitize(text.replace("0.116   12.68", "0.117   12.68")) != _sanitize(text)
    assert _sanitize(text.replace("1440 |", "1441 |", 1)) != _sanitize(text)


def test_nbval_compares_uris_in_errors_except_the_one_a_dying_service_picks():
    text = _stored_text("03_execution_context.ipynb")
    assert "'uri://100'" in text
    assert _sanitize(text.replace("'uri://100'", "'uri://101'")) != _sanitize(text)
    dying = _stored_text("05_remote_data_service.ipynb")
    picked = re.search(r"failed for URI 'uri://(\d+)': ConnectionError", dying)
    assert picked, "05's stored error of a service that died is not there"
    other = dying.replace(picked.group(0), picked.group(0).replace(picked.group(1), "3"))
    assert _sanitize(other) == _sanitize(dying)
