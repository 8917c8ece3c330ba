"""scripts/run_tutorial executes notebooks in a real kernel and says where it put them."""

import json
import os
import subprocess
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_tutorial(*args, build_dir):
    env = {**os.environ, "BUILD_DIR": str(build_dir)}
    return subprocess.run([ROOT / "scripts" / "run_tutorial", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.notebook
def test_run_tutorial_executes_a_notebook_in_another_folder(tmp_path):
    # The kernel runs in the build folder and talks to nbconvert over Unix
    # sockets with relative paths: this failed when run_tutorial ran
    # nbconvert from the repository's root.
    source = tmp_path / "in" / "tiny.ipynb"
    source.parent.mkdir()
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("import os\nprint(os.path.basename(os.getcwd()))"),
                      nbformat.v4.new_code_cell("for p in (0, 50):\n    print(f'{p}%', end='\\r')\nprint('100%')")]
    nbformat.write(notebook, source)
    result = run_tutorial(source, build_dir=tmp_path / "out")
    assert result.returncode == 0, result.stdout + result.stderr
    executed = json.loads((tmp_path / "out" / "tiny.ipynb").read_text())
    assert "".join(executed["cells"][0]["outputs"][0]["text"]) == "out\n"
    # A progress bar's redraws are stored as its last state only.
    assert ["".join(o["text"]) for o in executed["cells"][1]["outputs"]] == ["100%\n"]
    assert f"-> {tmp_path / 'out' / 'tiny.ipynb'}" in result.stdout
    assert not list((tmp_path / "out").glob("kernel-ipc-*")), "socket files left behind"


@pytest.mark.notebook
def test_run_tutorial_names_a_missing_notebook(tmp_path):
    result = run_tutorial(tmp_path / "nope.ipynb", build_dir=tmp_path / "out")
    assert result.returncode == 2
    assert "no notebook" in result.stderr and "nope.ipynb" in result.stderr


# What a learner's account has, unlike root's on these machines: no variables
# that point TLS clients at extra certificates (an intercepting proxy's).
CERTIFICATE_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT",
                         "NIX_SSL_CERT_FILE")


def uv_dry_run(tmp_path, name, setup_environment):
    """Asks the package registry for one pinned package of the lock as scripts/setup's uv does,
    with the certificate variables removed; with or without the variables setup exports."""
    pin = next(line.split()[0] for line in (ROOT / "requirements" / "requirements.txt").read_text().splitlines()
               if line.startswith("six=="))
    venv = tmp_path / name
    subprocess.run([ROOT / ".venv" / "bin" / "python", "-m", "venv", "--without-pip", venv], check=True)
    env = {k: v for k, v in os.environ.items() if k not in CERTIFICATE_VARIABLES and not k.startswith("UV_")}
    env["UV_CACHE_DIR"] = str(tmp_path / f"{name}-cache")  # Empty: uv must ask the registry.
    uv, python = ROOT / ".venv" / "bin" / "uv", venv / "bin" / "python"
    command = f"{uv} pip install --dry-run --no-deps --python {python} {pin}"
    if setup_environment:  # scripts/setup's own export lines, run as it runs them.
        exports = "\n".join(line for line in (ROOT / "scripts" / "setup").read_text().splitlines()
                             if line.startswith("export UV_"))
        assert exports, "scripts/setup exports no UV_ variable"
        command = exports + "\n" + command
    return subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.mark.install
def test_setups_uv_reaches_the_registry_without_certificate_variables(tmp_path):
    """Behind a TLS-inspecting proxy whose certificate is only in the system's store, uv's
    own bundle fails ("UnknownIssuer"); setup makes uv read the system's store too."""
    with_setup = uv_dry_run(tmp_path, "with-setup", setup_environment=True)
    assert with_setup.returncode == 0, with_setup.stdout + with_setup.stderr
    assert "Would install 1 package" in with_setup.stderr + with_setup.stdout
    bare = uv_dry_run(tmp_path, "bare", setup_environment=False)
    if bare.returncode != 0:  # The positive control: this network intercepts TLS.
        assert "UnknownIssuer" in bare.stderr, bare.stderr
