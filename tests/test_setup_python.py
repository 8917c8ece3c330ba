"""Which Python 3.11 scripts/setup builds .venv with, and how it gets one where the machine has none.

`scripts/setup --python` makes the decision and prints the interpreter, and
does nothing else, so these tests run it in a copy of the kit's scripts with a
PATH that has, or lacks, a Python 3.11:

- with a 3.11 on PATH, setup takes it and fetches nothing;
- without one, it gets uv from the lock's wheel (scripts/bootstrap_uv.py,
  hash-checked) and has uv install a managed CPython 3.11 into .kit-tools.
  The real download comes from GitHub, which these machines do not reach:
  one test tries it and accepts either outcome that a learner could meet
  (installed, or a clear error that says what to do); another serves uv an
  interpreter archive made here from this machine's 3.11, through uv's own
  setting for where downloads come from, to run everything after the download;
- offline, a wheelhouse without an interpreter, or without uv's wheel, is named.
"""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "requirements.txt"
sys.path.insert(0, str(ROOT / "scripts"))
import bootstrap_uv  # noqa: E402  (scripts/ is not a package)

UV_VERSION, UV_HASHES = bootstrap_uv.uv_pin(LOCK)
# Certificate and proxy variables stay as the machine has them; the rest is a learner's shell.
KEEP = ("HOME", "LANG", "SSL_CERT_FILE", "SSL_CERT_DIR", "HTTPS_PROXY", "https_proxy", "NO_PROXY")


def other_python() -> str | None:
    """A Python 3 that is not 3.11, to play the machine's only Python."""
    candidates = [shutil.which(f"python3.{minor}") for minor in (12, 13, 14, 10)]
    try:
        candidates += sorted(str(p) for p in Path("/root/.pyenv/versions").glob("3.1[2-4]*/bin/python3"))
    except OSError:  # Not root: root's pyenv is not ours to read.
        pass
    for candidate in filter(None, candidates):
        version = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2] != (3, 11))"],
                                 capture_output=True, text=True, check=False).stdout.strip()
        if version == "True":
            return candidate
    return None


@pytest.fixture
def kit(tmp_path):
    """The kit's scripts, lock and project file in a folder of their own."""
    kit = tmp_path / "kit"
    shutil.copytree(ROOT / "scripts", kit / "scripts")
    shutil.copytree(ROOT / "requirements", kit / "requirements")
    shutil.copy2(ROOT / "pyproject.toml", kit)
    return kit


@pytest.fixture
def no_311_path(tmp_path):
    """A PATH with the machine's programs, but whose only Python is not 3.11."""
    python = other_python()
    if python is None:
        pytest.skip("needs a Python 3 other than 3.11 (3.10, 3.12 or newer) to stand in for the machine's")
    folder = tmp_path / "bin"
    folder.mkdir()
    for directory in ("/usr/local/bin", "/usr/bin", "/bin"):
        for program in Path(directory).iterdir():
            if program.name.startswith(("python", "pydoc", "pip", "idle", "2to3", "uv")):
                continue
            if not (folder / program.name).exists():
                (folder / program.name).symlink_to(program)
    (folder / "python3").symlink_to(python)
    return str(folder)


# The machine's own PATH, with the folder of the Python 3.11 running these tests first:
# on a machine whose only 3.11 is setup's managed one, PATH alone has none.
PATH_WITH_311 = f"{Path(os.path.realpath(sys._base_executable)).parent}:{os.environ['PATH']}"


def setup_python(kit, path, **env):
    environment = {k: v for k, v in os.environ.items() if k in KEEP}
    environment.update(PATH=path, **env)
    return subprocess.run([str(kit / "scripts" / "setup"), "--python"], cwd=kit, env=environment,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def lock_uv(tmp_path_factory):
    """The lock's uv, fetched once from the package index as setup would."""
    dest = tmp_path_factory.mktemp("uv") / "uv"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bootstrap_uv.py"), "uv", str(LOCK),
                             str(dest)], capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0 and "could not download" in result.stderr:
        pytest.skip(f"the package index is out of reach: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    return dest


@pytest.mark.install
def test_bootstrap_uv_gets_the_locks_uv_from_the_index(lock_uv):
    version = subprocess.run([lock_uv, "--version"], capture_output=True, text=True, check=True).stdout
    assert version.split()[:2] == ["uv", UV_VERSION]


@pytest.mark.install
def test_a_machine_with_python_311_uses_it_and_fetches_nothing(kit):
    result = setup_python(kit, PATH_WITH_311)
    assert result.returncode == 0, result.stderr
    python = result.stdout.strip()
    version = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"]})
    assert version.stdout.strip() == "(3, 11)"
    assert not (kit / ".kit-tools").exists()
    assert "managed" not in result.stderr


@pytest.mark.install
def test_without_python_311_setup_tries_uvs_managed_python(kit, no_311_path, lock_uv):
    """The real download, from GitHub: installed where reachable, else an error that says what to do."""
    (kit / ".kit-tools").mkdir()
    shutil.copy2(lock_uv, kit / ".kit-tools" / "uv")
    result = setup_python(kit, no_311_path)
    assert "no Python 3.11 on PATH; getting a managed CPython 3.11 with uv" in result.stderr
    if result.returncode == 0:
        python = Path(result.stdout.strip())
        assert python.is_relative_to(kit / ".kit-tools" / "python")
        assert subprocess.run([python, "-c", "import sys; assert sys.version_info[:2] == (3, 11)"]).returncode == 0
    else:
        assert result.returncode == 1
        assert "uv could not install Python 3.11 (above)" in result.stderr
        assert "set PYTHON=/path/to/python3.11" in result.stderr
        assert "scripts/wheelhouse" in result.stderr
        assert result.stdout == ""


def interpreter_archive(folder: Path) -> Path:
    """An archive laid out as python-build-standalone's, made from the Python running this test."""
    executable = Path(os.path.realpath(sys._base_executable))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "site-packages", "dist-packages", "__pycache__", "idlelib", "tkinter", "lib2to3"}

    def without(info: tarfile.TarInfo):
        return None if skip & set(Path(info.name).parts) else info

    archive = folder / "cpython-3.11.99-test.tar.gz"
    with tarfile.open(archive, "w:gz", dereference=True) as tar:
        tar.add(executable, "python/bin/python3.11")
        tar.add(stdlib, "python/lib/python3.11", filter=without)
        libdir = Path(sysconfig.get_config_var("LIBDIR") or "/nonexistent")
        for library in libdir.glob("libpython3.11*.so*"):
            tar.add(library, f"python/lib/{library.name}")
    return archive


def downloads_json(folder: Path, archive: Path) -> Path:
    """uv's list of Python downloads, with one entry: the archive above."""
    entry = {"name": "cpython", "arch": {"family": "x86_64", "variant": None}, "os": "linux",
             "libc": "gnu", "major": 3, "minor": 11, "patch": 99, "prerelease": "",
             "url": archive.as_uri(), "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
             "variant": None, "build": "1"}
    listing = folder / "downloads.json"
    listing.write_text(json.dumps({"cpython-3.11.99-linux-x86_64-gnu": entry}))
    return listing


@pytest.mark.install
def test_without_python_311_setup_installs_a_managed_one_for_this_clone(kit, no_311_path, lock_uv,
                                                                        tmp_path):
    (kit / ".kit-tools").mkdir()
    shutil.copy2(lock_uv, kit / ".kit-tools" / "uv")
    archive = interpreter_archive(tmp_path)
    listing = downloads_json(tmp_path, archive)
    result = setup_python(kit, no_311_path, UV_PYTHON_DOWNLOADS_JSON_URL=listing.as_uri())
    assert result.returncode == 0, result.stderr
    python = Path(result.stdout.strip())
    assert python.is_relative_to(kit / ".kit-tools" / "python"), python
    check = subprocess.run([python, "-c", "import sys, venv; print(sys.version_info[:2])"],
                           capture_output=True, text=True, check=False)
    assert check.stdout.strip() == "(3, 11)", check.stderr

    # The next run finds the installed one: the archive is not needed again.
    archive.unlink()
    again = setup_python(kit, no_311_path, UV_PYTHON_DOWNLOADS_JSON_URL=listing.as_uri())
    assert (again.returncode, again.stdout) == (0, result.stdout), again.stderr


@pytest.mark.install
def test_offline_a_wheelhouse_without_an_interpreter_is_named(kit, no_311_path, tmp_path):
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    result = setup_python(kit, no_311_path, KIT_WHEELHOUSE=str(wheelhouse))
    assert result.returncode == 1
    assert f"the wheelhouse {wheelhouse} carries no Python 3.11 (no folder python/ in it)" in result.stderr
    assert f"Run scripts/wheelhouse {wheelhouse}" in result.stderr
    assert not (kit / ".kit-tools" / "uv").exists()


@pytest.mark.install
def test_offline_a_wheelhouse_without_uvs_wheel_is_named(kit, no_311_path, tmp_path):
    wheelhouse = tmp_path / "wheelhouse"
    (wheelhouse / "python").mkdir(parents=True)
    result = setup_python(kit, no_311_path, KIT_WHEELHOUSE=str(wheelhouse))
    assert result.returncode == 1
    assert f"has no {bootstrap_uv.wheel_name(UV_VERSION)}" in result.stderr
    assert not (kit / ".kit-tools" / "uv").exists()


def test_bootstrap_uv_refuses_a_wheel_whose_hash_the_lock_lacks(tmp_path):
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    (wheelhouse / bootstrap_uv.wheel_name(UV_VERSION)).write_bytes(b"a damaged download")
    dest = tmp_path / "uv"
    with pytest.raises(bootstrap_uv.BootstrapError, match="not one of the lock's hashes"):
        bootstrap_uv.get_uv(LOCK, dest, wheelhouse)
    assert not dest.exists()


def test_bootstrap_uv_names_a_lock_without_uv(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("numpy==1.25.2 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    with pytest.raises(bootstrap_uv.BootstrapError, match="pins no uv"):
        bootstrap_uv.uv_pin(lock)


def test_bootstrap_uv_saves_an_archive_where_uvs_mirror_setting_reads_it(tmp_path):
    source = tmp_path / "cpython-3.11.99+20990101-x86_64-unknown-linux-gnu-install_only.tar.gz"
    source.write_bytes(b"archive")
    url = (tmp_path.as_uri() + "/20990101/" + source.name.replace("+", "%2B"))
    (tmp_path / "20990101").mkdir()
    shutil.copy2(source, tmp_path / "20990101" / source.name)
    saved = bootstrap_uv.save_python_archive(url, tmp_path / "mirror")
    assert saved == tmp_path / "mirror" / "20990101" / source.name
    assert saved.read_bytes() == b"archive"


@pytest.mark.install
def test_preflight_before_setup_says_what_setup_will_do_without_311(kit, no_311_path):
    environment = {k: v for k, v in os.environ.items() if k in KEEP}
    result = subprocess.run([str(kit / "scripts" / "preflight")], cwd=kit, env={**environment, "PATH": no_311_path},
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "run scripts/setup first" in result.stderr
    assert "no Python 3.11 on PATH: setup will install a managed CPython 3.11" in result.stderr
    with_311 = subprocess.run([str(kit / "scripts" / "preflight")], cwd=kit, capture_output=True, text=True,
                              timeout=60, check=False, env={**environment, "PATH": PATH_WITH_311})
    assert with_311.returncode == 1 and "managed" not in with_311.stderr


def test_bootstrap_uv_hides_credentials_in_an_index_address(monkeypatch):
    with socket.socket() as probe:  # A loopback port nothing listens on.
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("UV_DEFAULT_INDEX", f"http://ada:s3cret@127.0.0.1:{port}/mirror")
    with pytest.raises(bootstrap_uv.BootstrapError) as failed:
        bootstrap_uv.wheel_from_index(bootstrap_uv.wheel_name(UV_VERSION))
    assert f"http://127.0.0.1:{port}/mirror/uv/" in str(failed.value)
    assert "s3cret" not in str(failed.value)
