"""scripts/wheelhouse collects the lock's files; KIT_WHEELHOUSE=DIR scripts/setup installs from them offline.

The fast tests use no network: bad arguments, a missing or incomplete
wheelhouse (setup must stop before it touches .venv), and a wheelhouse run
that finds every file already there. The slow one builds a real wheelhouse
for a small part of the lock from the package registry, then sets a clone up
from it with the network cut off.
"""

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tutorial_helpers import KERNEL_NAME

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "requirements.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
# Any attempt to reach a package index fails at once.
NO_NETWORK = {"PIP_NO_INDEX": "1", "UV_OFFLINE": "1", "http_proxy": "http://127.0.0.1:9",
              "https_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
              "HTTPS_PROXY": "http://127.0.0.1:9"}


def run(script, *args, cwd, env=None, timeout=120):
    environment = {k: v for k, v in os.environ.items() if k not in ("KIT_WHEELHOUSE", "LOCK")}
    environment.update(env or {})
    return subprocess.run([str(script), *map(str, args)], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def kit(tmp_path):
    """A clone of the kit with this working tree's scripts, never the real .venv."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout of the kit")
    clone = tmp_path / "kit"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=60)
    for script in (ROOT / "scripts").iterdir():
        if script.is_file():
            shutil.copy2(script, clone / "scripts" / script.name)
    shutil.copy2(LOCK, clone / "requirements" / "requirements.txt")
    return clone


@pytest.fixture
def broken_venv(kit):
    """A .venv that setup would replace (its python fails) if it got that far."""
    python = kit / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\nexit 1\n")
    python.chmod(0o755)
    (kit / ".venv" / "keep-me").write_text("learner's files")
    return kit / ".venv"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def lock_pins(lock: Path) -> list[tuple[str, str]]:
    return [match.groups() for match in map(PIN.match, lock.read_text().splitlines()) if match]


def fake_file(name: str, version: str) -> str:
    """A file name as the registry spells it: wheels with '_', old sources as published."""
    if name in ("jax", "sqlalchemy"):
        return f"{'SQLAlchemy' if name == 'sqlalchemy' else name}-{version}.tar.gz"
    return f"{re.sub(r'[-_.]+', '_', name)}-{version}-py3-none-any.whl"


# scripts/wheelhouse: arguments


@pytest.mark.install
@pytest.mark.parametrize("args", [(), ("a", "b"), ("",)])
def test_wheelhouse_wants_exactly_one_folder(kit, args):
    result = run(kit / "scripts" / "wheelhouse", *args, cwd=kit)
    assert result.returncode == 2
    assert "usage: scripts/wheelhouse DIR" in result.stderr
    assert "give exactly one folder" in result.stderr


@pytest.mark.install
def test_wheelhouse_names_an_unknown_option(kit):
    result = run(kit / "scripts" / "wheelhouse", "--dest", cwd=kit)
    assert result.returncode == 2
    assert "unknown option '--dest'" in result.stderr


@pytest.mark.install
def test_wheelhouse_help_describes_it(kit):
    result = run(kit / "scripts" / "wheelhouse", "--help", cwd=kit)
    assert result.returncode == 0
    assert "Usage: scripts/wheelhouse DIR" in result.stdout
    assert "KIT_WHEELHOUSE=" in result.stdout


@pytest.mark.install
def test_wheelhouse_refuses_a_file_as_folder(kit, tmp_path):
    target = tmp_path / "not-a-folder"
    target.write_text("")
    result = run(kit / "scripts" / "wheelhouse", "not-a-folder", cwd=tmp_path)
    assert result.returncode == 2
    assert f"{target} exists and is not a folder" in result.stderr


@pytest.mark.install
def test_wheelhouse_names_a_missing_lock(kit, tmp_path):
    result = run(kit / "scripts" / "wheelhouse", tmp_path / "wh", cwd=tmp_path, env={"LOCK": "nope.txt"})
    assert result.returncode == 2
    assert f"no lock file at {tmp_path / 'nope.txt'}" in result.stderr
    assert not (tmp_path / "wh").exists()


@pytest.mark.install
def test_wheelhouse_refuses_a_lock_without_pins(kit, tmp_path):
    (tmp_path / "empty.txt").write_text("# nothing pinned\n")
    result = run(kit / "scripts" / "wheelhouse", tmp_path / "wh", cwd=tmp_path, env={"LOCK": "empty.txt"})
    assert result.returncode == 2
    assert "pins no package" in result.stderr and "empty.txt" in result.stderr


# scripts/wheelhouse: a folder that already holds the files


def fake_lock(tmp_path) -> tuple[Path, Path]:
    """A lock of two made-up wheels, and a folder holding them with the lock's hashes.

    setuptools is one of them, so the build requirement of this repository
    (setuptools>=68) is met by the lock and nothing needs the registry.
    """
    folder = tmp_path / "wh"
    folder.mkdir()
    lines = []
    for name, version in (("kit-fake-pkg", "1.0"), ("setuptools", "99.0")):
        wheel = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
        wheel.write_bytes(f"made up {name}".encode())
        lines += [f"{name}=={version} \\", f"    --hash=sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}",
                  "    # via nothing"]
    lock = tmp_path / "fake-lock.txt"
    lock.write_text("\n".join(lines) + "\n")
    return lock, folder


@pytest.mark.install
def test_wheelhouse_keeps_what_the_folder_holds_and_downloads_nothing(kit, tmp_path):
    lock, folder = fake_lock(tmp_path)
    (folder / "other-0.1-py3-none-any.whl").write_bytes(b"left alone")
    result = run(kit / "scripts" / "wheelhouse", "wh", cwd=tmp_path, env={"LOCK": str(lock), **NO_NETWORK})
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"2 of 2 pins already in {folder}; 0 to download" in result.stdout
    assert f"{folder} holds 3 files" in result.stdout
    assert (folder / "other-0.1-py3-none-any.whl").read_bytes() == b"left alone"


@pytest.mark.install
@pytest.mark.parametrize("problem", ["another platform", "a bad hash"])
def test_wheelhouse_does_not_count_a_wrong_file(kit, tmp_path, problem):
    lock, folder = fake_lock(tmp_path)
    wheel = folder / "kit_fake_pkg-1.0-py3-none-any.whl"
    if problem == "another platform":
        wheel.rename(folder / "kit_fake_pkg-1.0-cp311-cp311-macosx_11_0_arm64.whl")
    else:
        wheel.write_bytes(b"corrupted on the stick")
    result = run(kit / "scripts" / "wheelhouse", folder, cwd=tmp_path, env={"LOCK": str(lock), **NO_NETWORK})
    assert result.returncode == 1
    assert "1 of 2 pins already" in result.stdout
    # It asked pip for the pin, and could not get it without network.
    assert "kit-fake-pkg" in result.stderr.lower().replace("_", "-")
    assert f"could not download every pin into {folder}" in result.stderr


# scripts/setup with KIT_WHEELHOUSE: stops before it touches .venv


@pytest.mark.install
def test_setup_names_a_wheelhouse_that_does_not_exist(kit, broken_venv):
    before = snapshot(broken_venv)
    result = run(kit / "scripts" / "setup", cwd=kit, env={"KIT_WHEELHOUSE": "/nonexistent/wheelhouse"})
    assert result.returncode == 2
    assert "KIT_WHEELHOUSE='/nonexistent/wheelhouse' is not a folder" in result.stderr
    assert "scripts/wheelhouse" in result.stderr
    assert snapshot(broken_venv) == before


@pytest.mark.install
def test_setup_refuses_an_empty_variable(kit, broken_venv):
    before = snapshot(broken_venv)
    result = run(kit / "scripts" / "setup", cwd=kit, env={"KIT_WHEELHOUSE": ""})
    assert result.returncode == 2
    assert "KIT_WHEELHOUSE='' is not a folder" in result.stderr
    assert snapshot(broken_venv) == before


@pytest.mark.install
def test_setup_takes_a_relative_wheelhouse_from_the_kit_folder(kit, broken_venv, tmp_path):
    result = run(kit / "scripts" / "setup", cwd=tmp_path, env={"KIT_WHEELHOUSE": "usb/wheelhouse"})
    assert result.returncode == 2
    assert f"({kit / 'usb' / 'wheelhouse'})" in result.stderr


@pytest.mark.install
def test_setup_names_what_an_empty_wheelhouse_lacks(kit, broken_venv, tmp_path):
    before = snapshot(broken_venv)
    folder = tmp_path / "empty"
    folder.mkdir()
    result = run(kit / "scripts" / "setup", cwd=kit, env={"KIT_WHEELHOUSE": str(folder), **NO_NETWORK})
    assert result.returncode == 2
    pins = lock_pins(LOCK)
    assert f"the wheelhouse {folder} lacks {len(pins)} of the pins" in result.stderr
    assert f"  {pins[0][0]}=={pins[0][1]}\n" in result.stderr
    assert snapshot(broken_venv) == before


@pytest.mark.install
def test_setup_names_the_one_package_a_wheelhouse_lacks(kit, broken_venv, tmp_path):
    before = snapshot(broken_venv)
    folder = tmp_path / "almost"
    folder.mkdir()
    for name, version in lock_pins(LOCK):
        if name != "tensorflow-federated":
            (folder / fake_file(name, version)).write_bytes(b"")
    result = run(kit / "scripts" / "setup", cwd=kit, env={"KIT_WHEELHOUSE": str(folder), **NO_NETWORK})
    assert result.returncode == 2
    assert f"the wheelhouse {folder} lacks 1 of the pins" in result.stderr
    assert "  tensorflow-federated==0.87.0\n" in result.stderr
    assert snapshot(broken_venv) == before


@pytest.mark.install
def test_setup_with_an_up_to_date_venv_needs_no_wheelhouse(kit):
    # As before the variable existed: a .venv that matches the lock is left as it is.
    python = kit / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\nexit 1\n")
    python.chmod(0o755)
    lock_and_project = (kit / "requirements" / "requirements.txt").read_bytes() + (kit / "pyproject.toml").read_bytes()
    (kit / ".venv" / ".kit-installed").write_text(hashlib.sha256(lock_and_project).hexdigest() + "\n")
    for env in ({}, {"KIT_WHEELHOUSE": "/nonexistent"}):
        result = run(kit / "scripts" / "setup", cwd=kit, env=env)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


# The real thing, on a small part of the lock


# What scripts/setup itself needs (uv, ipykernel for the kernel, setuptools for
# `-e .`) with their dependencies, and jax, whose source is built on install.
SMALL_LOCK = """asttokens comm debugpy executing ipykernel ipython ipython-pygments-lexers jedi
jupyter-client jupyter-core matplotlib-inline nest-asyncio2 packaging parso pexpect platformdirs
prompt-toolkit psutil ptyprocess pure-eval pygments python-dateutil pyzmq setuptools six
stack-data tornado traitlets typing-extensions tzdata uv wcwidth wheel jax""".split()


@pytest.mark.install
def test_a_real_wheelhouse_installs_with_no_network(kit, tmp_path):
    """About 40 s: downloads about 35 MB from the package registry, then installs offline."""
    small = tmp_path / "small-lock.txt"
    keep, lines = False, []
    for line in LOCK.read_text().splitlines():
        match = PIN.match(line)
        if match:
            keep = match.group(1) in SMALL_LOCK
        if keep:
            lines.append(line)
    small.write_text("\n".join(lines) + "\n")
    assert len(lock_pins(small)) == len(SMALL_LOCK)

    folder = tmp_path / "wheelhouse"
    built = run(kit / "scripts" / "wheelhouse", folder, cwd=tmp_path, env={"LOCK": str(small)}, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "jax-0.4.14.tar.gz is a source" in built.stdout
    # Where GitHub is reachable the folder also carries a Python 3.11 archive.
    carried = len(list((folder / "python").rglob("*.tar.gz"))) if (folder / "python").exists() else 0
    assert f"{folder} holds {len(SMALL_LOCK) + carried} files" in built.stdout
    assert ("Python 3.11 for machines without one" in built.stdout) == bool(carried), built.stderr

    # The clone's lock becomes the small one; its setup then sees no network
    # (its own network namespace where unshare allows it) and no uv cache.
    shutil.copy2(small, kit / "requirements" / "requirements.txt")
    setup = [str(kit / "scripts" / "setup")]
    if shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0:
        setup = ["unshare", "-rn", *setup]
    env = {k: v for k, v in os.environ.items() if k not in ("LOCK", "VIRTUAL_ENV")}
    env.update(NO_NETWORK, KIT_WHEELHOUSE=str(folder), UV_CACHE_DIR=str(tmp_path / "empty-uv-cache"))
    result = subprocess.run(setup, cwd=kit, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"from {folder} (no network)" in result.stdout
    python = kit / ".venv" / "bin" / "python"
    versions = "from importlib.metadata import version as v; print(v('jax'), v('tutorial-helpers'), v('uv'))"
    check = subprocess.run([python, "-c", versions], capture_output=True, text=True, check=False)
    uv_pin = next(version for name, version in lock_pins(small) if name == "uv")
    assert check.stdout.split() == ["0.4.14", "0.1.0", uv_pin], check.stderr
    kernels = subprocess.run([kit / ".venv" / "bin" / "jupyter", "kernelspec", "list"],
                             capture_output=True, text=True, check=False)
    assert KERNEL_NAME in kernels.stdout, kernels.stderr
