"""The three ways to install the kit agree, and the installed environment is the lock."""

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
    assert len(pins) > 100  # Complete: installed with --no-deps by pip-based paths.
    unpinned = [
        line for line in LOCK.read_text().splitlines()
        if line.strip() and not line.startswith("#") and not PIN.match(line)
    ]
    assert unpinned == []


def test_environment_yml_installs_exactly_the_lock_on_python_3_11():
    text = (ROOT / "environment.yml").read_text()
    assert re.search(r"^\s*- python=3\.11\s*$", text, re.M)
    assert "PIP_NO_DEPS=1 conda env create -f environment.yml" in text
    assert pins_in(text.splitlines()) == lock_pins()


def test_binder_installs_exactly_the_lock_on_python_3_11():
    binder = ROOT / "binder"
    assert (binder / "runtime.txt").read_text().strip() == "python-3.11"
    post_build = (binder / "postBuild").read_text()
    assert "pip install --no-cache-dir --no-deps -r requirements/requirements.txt" in post_build
    assert (binder / "postBuild").stat().st_mode & 0o111, "postBuild must be executable"
    # Files repo2docker would install with dependency resolution, which cannot succeed.
    for resolving in ("requirements.txt", "environment.yml", "Pipfile", "setup.py"):
        assert not (binder / resolving).exists(), f"binder/{resolving} would bypass the lock"


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


def test_no_committed_file_names_a_package_index():
    try:
        files = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    pattern = re.compile(r"--(extra-)?index-url|/simple/?\b|file:///opt/|find-links")
    offenders = []
    for name in files:
        path = ROOT / name
        if path.suffix in {".npz", ".png"} or not path.is_file() or name == "tests/test_environment.py":
            continue
        if pattern.search(path.read_text(errors="ignore")):
            offenders.append(name)
    assert offenders == []


def test_readme_gives_the_two_commands_and_ci_runs_the_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "scripts/run_tutorial" in readme
    assert "scripts/run_tests" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/run_tests" in ci


def test_code_passes_ruff():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
