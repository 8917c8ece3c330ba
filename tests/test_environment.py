"""The three ways to install the kit agree, and the installed environment is the lock."""

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "requirements.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def pins_in(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        match = PIN.match(line.strip().removeprefix("- ").strip())
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def lock_pins() -> dict[str, str]:
    return pins_in(LOCK.read_text().splitlines())


def test_lock_pins_tff_with_the_overrides_it_needs():
    pins = lock_pins()
    assert pins["tensorflow-federated"] == "0.87.0"
    assert pins["jaxlib"] == "0.4.13"
    assert tuple(int(x) for x in pins["typing-extensions"].split(".")[:2]) >= (4, 12)
    # Not tensorflow-privacy's packaging~=22.0: JupyterLab 4.5 does not start with it.
    assert tuple(int(x) for x in pins["packaging"].split(".")[:2]) >= (24, 2)
    assert len(pins) > 100  # Complete: installed with --no-deps by pip-based paths.
    unpinned = [
        line for line in LOCK.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "--hash=sha256:"))
        and not PIN.match(line)
    ]
    assert unpinned == []


def test_every_pin_of_the_lock_carries_its_hashes():
    """pip and uv check every download against these (jax is installed from its sdist)."""
    hashes: dict[str, int] = {}
    name = None
    for line in LOCK.read_text().splitlines():
        match = PIN.match(line)
        if match:
            name = match.group(1).lower()
            hashes[name] = 0
        elif line.lstrip().startswith("--hash=sha256:"):
            assert re.fullmatch(r"\s+--hash=sha256:[0-9a-f]{64}( \\)?", line), line
            hashes[name] += 1
    assert len(hashes) == len(lock_pins())
    assert [name for name, count in hashes.items() if count == 0] == []


def test_environment_yml_installs_exactly_the_lock_on_python_3_11():
    text = (ROOT / "environment.yml").read_text()
    assert re.search(r"^\s*- python=3\.11\s*$", text, re.M)
    assert "PIP_NO_DEPS=1 conda env create -f environment.yml" in text
    assert pins_in(text.splitlines()) == lock_pins()


def test_binder_runtime_is_python_3_11_and_nothing_resolves_dependencies():
    binder = ROOT / "binder"
    assert (binder / "runtime.txt").read_text().strip() == "python-3.11"
    assert (binder / "postBuild").stat().st_mode & 0o111, "postBuild must be executable"
    # Files repo2docker would install with dependency resolution, which cannot succeed.
    for resolving in ("requirements.txt", "environment.yml", "Pipfile", "setup.py"):
        assert not (binder / resolving).exists(), f"binder/{resolving} would bypass the lock"


@pytest.mark.install
def test_binder_postbuild_points_both_kernels_at_the_kit_and_leaves_binders_environment_alone(tmp_path):
    """binder/postBuild, run over a stand-in for Binder's environment (a venv at NB_PYTHON_PREFIX).

    The kit's own .venv is already set up here, so its scripts/setup returns at
    once; what is tested is what postBuild adds: the kernels "python3" (which
    the notebooks ask for) and the kit's, both running the kit's .venv, and no
    package installed into Binder's environment (installing the lock there
    would downgrade SQLAlchemy under jupyterhub-singleuser).
    """
    import json

    from tutorial_helpers import KERNEL_DISPLAY_NAME, KERNEL_NAME

    binder_env = tmp_path / "srv-conda"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", binder_env], check=True, timeout=120)
    before = sorted(p.name for p in (binder_env / "lib").rglob("site-packages/*"))
    result = subprocess.run([ROOT / "binder" / "postBuild"], cwd=ROOT, capture_output=True, text=True,
                            timeout=600, check=False, env={**os.environ, "NB_PYTHON_PREFIX": str(binder_env)})
    assert result.returncode == 0, result.stdout + result.stderr
    kernels = binder_env / "share" / "jupyter" / "kernels"
    specs = {name: json.loads((kernels / name / "kernel.json").read_text()) for name in ("python3", KERNEL_NAME)}
    for name, spec in specs.items():
        assert Path(spec["argv"][0]).resolve() == (ROOT / ".venv" / "bin" / "python").resolve(), name
    assert specs["python3"]["display_name"] == "Python 3"
    assert specs[KERNEL_NAME]["display_name"] == KERNEL_DISPLAY_NAME
    assert sorted(p.name for p in (binder_env / "lib").rglob("site-packages/*")) == before


def test_installed_environment_is_the_lock():
    mismatched = {}
    for name, version in lock_pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            mismatched[name] = (version, installed)
    assert mismatched == {}


@pytest.mark.process
def test_no_committed_file_names_a_package_index():
    try:
        files = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    # pip's own default, PyPI's simple index, may be named (scripts/bootstrap_uv.py falls
    # back to it as pip does); any other index may not.
    pattern = re.compile(r"--(extra-)?index-url|(?<!//pypi\.org)/simple/?\b|file:///opt/|find-links")
    offenders = []
    for name in files:
        path = ROOT / name
        if path.suffix in {".npz", ".png"} or not path.is_file() or name == "tests/test_environment.py":
            continue
        if pattern.search(path.read_text(errors="ignore")):
            offenders.append(name)
    assert offenders == []


@pytest.mark.process
def test_code_passes_ruff():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("cmdline", "is_kit"),
    [
        (["/v/lib/python3.11/site-packages/tensorflow_federated/data/worker_binary", "--port=1"], True),
        (["python", "-m", "tutorial_helpers.data_service", "--port=8000"], True),
        (["python", "-m", "tutorial_helpers.runtime.launcher", "--parent=1", "--",
          "/v/site-packages/tensorflow_federated/data/worker_binary", "--port=1"], True),
        (["unshare", "-rn", "python3", "-m", "tutorial_helpers.runtime.launcher", "--", "worker"], True),
        (["python", "-mtutorial_helpers.data_service"], True),
        # TFF's own local context, started by a computation run outside the kit's.
        (["/v/site-packages/tensorflow_federated/python/core/impl/executor_stacks/../../../../data/"
          "worker_binary", "--port=1"], True),
        (["python", "-m", "pytest", "tests/test_data.py"], False),
        (["python", "-c", "from tutorial_helpers import remote_data"], False),
        ([], False),  # A kernel thread, or a process whose arguments are gone.
    ],
)
def test_leak_check_recognizes_kit_processes_behind_wrappers(cmdline, is_kit):
    from tests.conftest import is_kit_command

    assert is_kit_command(cmdline) is is_kit


@pytest.mark.process
def test_leak_check_finds_only_this_sessions_kit_processes():
    import os
    import time

    from tests.conftest import SESSION_MARK_NAME, worker_pids

    # A stand-in with a kit command line: `-c` ignores the arguments after it.
    args = [sys.executable, "-c", "import time; time.sleep(60)", "-m", "tutorial_helpers.runtime.launcher"]
    other_env = {k: v for k, v in os.environ.items() if k != SESSION_MARK_NAME}
    ours = subprocess.Popen(args)
    theirs = subprocess.Popen(args, env=other_env)
    try:
        deadline = time.monotonic() + 10
        while ours.pid not in worker_pids() and time.monotonic() < deadline:
            time.sleep(0.05)  # Until the child has exec'd Python.
        found = worker_pids()
        assert ours.pid in found
        assert theirs.pid not in found
    finally:
        for process in (ours, theirs):
            process.kill()
            process.wait()
    assert ours.pid not in worker_pids()


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_pyproject_declares_every_package_tutorial_helpers_imports():
    import ast
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_normalized(re.split(r"[<>=~!;\s\[]", dep, maxsplit=1)[0]) for dep in project["dependencies"]}
    imported = set()
    for path in (ROOT / "tutorial_helpers").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    distributions = metadata.packages_distributions()
    needed = {
        _normalized(dist)
        for module in imported - set(sys.stdlib_module_names) - {"tutorial_helpers"}
        for dist in distributions.get(module, [module])
    }
    assert needed - declared == set(), "add these to [project] dependencies in pyproject.toml"


def test_pyproject_requires_the_python_the_lock_is_compiled_for():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11,<3.12"
    # TFF 0.87, the reason for 3.11, says which Pythons it supports; the project's range is inside it.
    from packaging.specifiers import SpecifierSet

    tff_supports = SpecifierSet(metadata.metadata("tensorflow-federated").get("Requires-Python") or "")
    assert all(version in tff_supports for version in ("3.11.0", "3.11.9")), tff_supports
