"""scripts/run_tutorial executes notebooks in a real kernel and says where it put them."""

import json
import os
import subprocess
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def run_tutorial(*args, build_dir):
    env = {**os.environ, "BUILD_DIR": str(build_dir)}
    return subprocess.run([ROOT / "scripts" / "run_tutorial", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_run_tutorial_executes_a_notebook_in_another_folder(tmp_path):
    # The kernel runs in the build folder and talks to nbconvert over Unix
    # sockets with relative paths: this failed when run_tutorial ran
    # nbconvert from the repository's root.
    source = tmp_path / "in" / "tiny.ipynb"
    source.parent.mkdir()
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("import os\nprint(os.path.basename(os.getcwd()))")]
    nbformat.write(notebook, source)
    result = run_tutorial(source, build_dir=tmp_path / "out")
    assert result.returncode == 0, result.stdout + result.stderr
    executed = json.loads((tmp_path / "out" / "tiny.ipynb").read_text())
    assert "".join(executed["cells"][0]["outputs"][0]["text"]) == "out\n"
    assert f"-> {tmp_path / 'out' / 'tiny.ipynb'}" in result.stdout
    assert not list((tmp_path / "out").glob("kernel-ipc-*")), "socket files left behind"


def test_run_tutorial_names_a_missing_notebook(tmp_path):
    result = run_tutorial(tmp_path / "nope.ipynb", build_dir=tmp_path / "out")
    assert result.returncode == 2
    assert "no notebook" in result.stderr and "nope.ipynb" in result.stderr
