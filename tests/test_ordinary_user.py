"""The learner's path as an ordinary user: learners are not root, and these machines run as root.

Where the tests run as root, this module becomes a second uid, `kit-learner`
(made with useradd if missing), with a new home and a shell's environment:
PATH without root's own tools, and none of root's certificate variables
(SSL_CERT_FILE, REQUESTS_CA_BUNDLE, PIP_CERT and the like), so HTTPS must
work with the system's certificate store alone, as on a learner's laptop.
As that user it clones the kit (the committed HEAD), and runs, as the README
says: scripts/setup from an empty cache (the real install from the package
registry), setup again (its up-to-date check), scripts/preflight (which
starts JupyterLab and trains one round with its workers in a private network
made without privileges), and notebook 03 in a fresh kernel through
scripts/run_tutorial (its workers contained: they refuse to start otherwise
on a machine with a network address). Then it checks that nothing in the
user's home or clone belongs to root, and that no process of the user is left.

As an ordinary user the module skips: that user's own runs are the test.
"""

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LEARNER = "kit-learner"
NOTEBOOK = "notebooks/03_execution_context.ipynb"

@pytest.fixture(scope="module")
def learner():
    if os.geteuid() != 0:
        pytest.skip("needs root to become a second, ordinary user; run as an ordinary user, "
                    "the whole test command already is that user's path")
    for tool in ("useradd", "runuser", "git", "pkill"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} to run the kit as an ordinary user")
    try:
        pwd.getpwnam(LEARNER)
        made = False
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/bash",
                        LEARNER], check=True, capture_output=True, timeout=60)
        made = True
    user = pwd.getpwnam(LEARNER)
    base = Path(tempfile.mkdtemp(prefix="kit-learner-", dir="/tmp"))
    base.chmod(0o755)
    home = base / "home"
    home.mkdir()
    os.chown(home, user.pw_uid, user.pw_gid)
    try:
        yield user, home
    finally:
        subprocess.run(["pkill", "-KILL", "-u", LEARNER], check=False)
        shutil.rmtree(base, ignore_errors=True)
        if made and shutil.which("userdel"):
            subprocess.run(["userdel", LEARNER], check=False, capture_output=True, timeout=60)


def as_learner(learner, *command, cwd=None, timeout=900):
    user, home = learner
    environment = {"HOME": str(home), "USER": LEARNER, "LOGNAME": LEARNER, "SHELL": "/bin/bash",
                   "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    start = time.monotonic()
    result = subprocess.run(["runuser", "-u", LEARNER, "--", "env", "-i",
                             *(f"{k}={v}" for k, v in environment.items()), *map(str, command)],
                            cwd=cwd or home, capture_output=True, text=True, timeout=timeout, check=False)
    result.seconds = time.monotonic() - start
    return result


def owned_by_others(folder: Path, uid: int) -> list[str]:
    return [str(path) for path in [folder, *folder.rglob("*")] if path.lstat().st_uid != uid]


@pytest.mark.root
def test_the_learners_path_as_an_ordinary_user(learner):
    user, home = learner
    clone = home / "kit"
    # The checkout may sit where other users cannot read (a `mktemp -d` folder): root copies its commits into
    # the learner's readable base folder first, and the learner clones that copy.
    source = home.parent / "kit.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", "--no-local", str(ROOT), str(source)], check=True,
                   capture_output=True, timeout=300)
    for path in [source, *source.rglob("*")]:
        path.chmod(path.stat().st_mode | (0o055 if path.is_dir() else 0o044))
    # git refuses to read a repository that another user owns unless told it is safe.
    steps = [as_learner(learner, "git", "config", "--global", "--add", "safe.directory", source),
             as_learner(learner, "git", "clone", "--quiet", source, clone)]
    for step in steps:
        assert step.returncode == 0, step.stderr

    setup = as_learner(learner, clone / "scripts" / "setup", cwd=clone)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    print(f"setup as {LEARNER} from an empty cache: {setup.seconds:.0f} s")
    again = as_learner(learner, clone / "scripts" / "setup", cwd=clone)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")

    preflight = as_learner(learner, clone / "scripts" / "preflight", cwd=clone)
    assert preflight.returncode == 0, preflight.stdout + preflight.stderr
    lines = preflight.stdout.splitlines()
    assert f"preflight: ok   user: running as {LEARNER}, not root" in lines
    assert "preflight: ok   private network: TFF workers run in a network of their own" in lines, lines
    assert any(line.startswith("preflight: ok   certificates:") for line in lines), lines
    assert lines[-1].startswith("preflight: ready (")

    build = home / "executed"
    tutorial = as_learner(learner, "env", f"BUILD_DIR={build}", clone / "scripts" / "run_tutorial", NOTEBOOK,
                          cwd=clone)
    assert tutorial.returncode == 0, tutorial.stdout + tutorial.stderr
    executed = json.loads((build / Path(NOTEBOOK).name).read_text())
    errors = [output for cell in executed["cells"] for output in cell.get("outputs", [])
              if output.get("output_type") == "error"]
    assert not errors
    assert sum(1 for cell in executed["cells"] if cell.get("outputs")) > 5

    others = owned_by_others(home, user.pw_uid)
    assert not others, f"written as another user: {others[:10]}"
    for _ in range(50):  # Workers and kernels stop with their parents; give them a moment.
        left = subprocess.run(["pgrep", "-a", "-u", LEARNER], capture_output=True, text=True, check=False)
        if not left.stdout:
            break
        time.sleep(0.2)
    assert not left.stdout, f"processes left running: {left.stdout}"
