"""The first cell of every notebook: where does this notebook run, and can it run here?

Every notebook starts with the same short cell. It finds this file (in the
clone it belongs to, or, on Colab, in a fresh clone) and runs it. This file
then looks at the Python it runs in and does one of four things:

* **ready**: TensorFlow Federated 0.87 and ``tutorial_helpers`` are installed
  (the kit's environment, Binder, the container, a Codespace). It says so in
  one line, the same everywhere, and the notebook goes on.
* **install**: Colab with Python 3.11 (a past runtime version). It installs the
  kit's lock with ``--no-deps`` and the kit, then asks for a restart.
* **stop**: a Python or a machine TFF 0.87 cannot run on (Colab's current
  Python 3.12+, macOS, Windows, ARM). It lists what works instead.
* **advise**: a Python that could run the kit but does not have it (the wrong
  Jupyter kernel, or a clone not set up yet). It says what to run.

Only the standard library is used, and nothing is imported that may be
missing: it has to run before anything is installed. :func:`decide` takes the
facts as arguments, so the tests can try every case on one machine.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import os
import pathlib
import platform
import subprocess
import sys

TFF_VERSION = "0.87.0"
KERNEL_DISPLAY = "Python 3.11 (TFF 0.87 remote data kit)"
KIT_ROOT = pathlib.Path(__file__).resolve().parents[2]  # The kit: tutorial_helpers/workshop/ is two down.


@dataclasses.dataclass(frozen=True)
class Facts:
    """What :func:`decide` needs to know about the Python this notebook runs in."""

    python: tuple[int, int]
    system: str  # platform.system(): "Linux", "Darwin", "Windows"
    machine: str  # platform.machine(): "x86_64", "arm64", "AMD64", ...
    colab: bool
    binder: bool
    container: bool
    tff_version: str | None  # installed tensorflow-federated, or None
    helpers_installed: bool  # is tutorial_helpers importable?
    kit_root: pathlib.Path
    kit_venv: bool  # has scripts/setup finished installing kit_root/.venv...
    in_kit_venv: bool  # ...and is this Python the one in it?


@dataclasses.dataclass(frozen=True)
class Advice:
    """What to do: ``action`` is "ready", "install", "stop" or "advise"."""

    action: str
    message: str
    commands: tuple[tuple[str, ...], ...] = ()


def gather(kit_root: pathlib.Path | None = None) -> Facts:
    """Finds the facts about the running Python, without importing TensorFlow.

    `kit_root` is the kit's folder, by default the one this file is in.
    """
    kit_root = KIT_ROOT if kit_root is None else kit_root
    try:
        tff_version = importlib.metadata.version("tensorflow-federated")
    except importlib.metadata.PackageNotFoundError:
        tff_version = None
    venv = kit_root / ".venv"
    return Facts(
        python=sys.version_info[:2],
        system=platform.system(),
        machine=platform.machine(),
        colab="google.colab" in sys.modules,
        binder=any(key in os.environ for key in ("BINDER_REPO_URL", "BINDER_SERVICE_HOST")),
        # The kit's Dockerfile and devcontainer.json set KIT_CONTAINER; Codespaces sets CODESPACES.
        container=any(key in os.environ for key in ("KIT_CONTAINER", "CODESPACES")),
        tff_version=tff_version,
        helpers_installed=importlib.util.find_spec("tutorial_helpers") is not None,
        kit_root=kit_root,
        # scripts/setup writes this stamp last: a .venv left by a failed setup
        # (on macOS, say) does not count as a kit that is set up.
        kit_venv=(venv / ".kit-installed").is_file(),
        in_kit_venv=venv.is_dir() and pathlib.Path(sys.prefix).resolve() == venv.resolve(),
    )


ALTERNATIVES = """\
What works instead (README, "Where to run the kit"):
  * Binder: the notebook's Binder badge in the README; nothing to install.
  * A GitHub Codespace or VS Code Dev Container: the repository's .devcontainer/.
  * Docker on your laptop (macOS, Windows, Linux): the README's "Containers" section.
  * Colab connected to a local runtime that runs the kit on Linux x86-64."""


def decide(facts: Facts) -> Advice:
    """Chooses what the first cell does, from the facts alone."""
    here = f"Python {facts.python[0]}.{facts.python[1]} on {facts.system} {facts.machine}"
    if facts.tff_version == TFF_VERSION and facts.helpers_installed:
        return Advice(
            "ready",
            f"Ready: TensorFlow Federated {TFF_VERSION} and the kit's tutorial_helpers "
            "are installed in this kernel.",
        )
    linux_x86 = facts.system == "Linux" and facts.machine in ("x86_64", "AMD64")
    if facts.colab:
        if facts.python != (3, 11):
            return Advice(
                "stop",
                f"This Colab runtime has {here}. TensorFlow Federated 0.87, the newest "
                "release, installs only on Python 3.9 to 3.11, so the kit cannot run "
                "here.\n" + ALTERNATIVES + "\n  * Or a past Colab runtime with Python "
                "3.11 (Command palette, 'Change runtime version', 2025.07), if Colab "
                "still offers it; then run this cell again.",
            )
        root = str(facts.kit_root)
        return Advice(
            "install",
            "Installed the kit into this Colab runtime. Restart the session "
            "(Runtime > Restart session), then run the notebook again from the top; "
            "this cell will then say Ready.",
            commands=(
                (sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "-r",
                 f"{root}/requirements/requirements.txt"),
                (sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "-e", root),
            ),
        )  # fmt: skip
    if facts.kit_venv and not facts.in_kit_venv:
        return Advice(
            "advise",
            f"The kit is set up in {facts.kit_root / '.venv'}, but this kernel runs "
            f'another Python ({sys.executable}). Choose the kernel "{KERNEL_DISPLAY}" '
            "(Kernel > Change kernel), or start Jupyter from the kit: "
            ".venv/bin/jupyter lab notebooks/",
        )
    if not linux_x86 or facts.python[:1] != (3,) or not 9 <= facts.python[1] <= 11:
        return Advice(
            "stop",
            f"This kernel runs {here}. TensorFlow Federated 0.87 installs only on "
            "Linux x86-64 with Python 3.9 to 3.11 (the kit uses 3.11).\n" + ALTERNATIVES,
        )
    if facts.binder or facts.container:
        where = "Binder" if facts.binder else "This container"
        return Advice(
            "advise",
            f"{where} should have the kit installed, but this kernel has no "
            "TensorFlow Federated 0.87. Choose the kernel "
            f'"{KERNEL_DISPLAY}" or "Python 3" (Kernel > Change kernel); if that does '
            "not help, rebuild the image: its build log shows what failed.",
        )
    return Advice(
        "advise",
        f"This kernel ({here}) does not have the kit installed. In a terminal, "
        f"in {facts.kit_root}, run\n    scripts/setup\nthen choose the kernel "
        f'"{KERNEL_DISPLAY}" (Kernel > Change kernel), or start Jupyter with '
        ".venv/bin/jupyter lab notebooks/",
    )


FIRST_CELL = """\
#@title Setup: run this cell first
# Checks where this notebook runs and whether the kit is installed here; if not,
# says what to do. The logic is in the kit's tutorial_helpers/workshop/setup_check.py.
import importlib.util
import pathlib
import runpy
import subprocess
import sys

KIT_REPOSITORY = "{clone_url}"
KIT_REF = "{ref}"  # The kit's version this notebook belongs to, which Colab fetches.
here = pathlib.Path.cwd()
kit = next((p for p in (here, *here.parents) if (p / "tutorial_helpers/workshop/setup_check.py").is_file()), None)
if kit is None and importlib.util.find_spec("tutorial_helpers"):  # A copy, in the kit's kernel.
    kit = pathlib.Path(importlib.util.find_spec("tutorial_helpers").origin).parents[1]
if kit is None and "google.colab" in sys.modules:  # Opened from GitHub: fetch the kit.
    kit = pathlib.Path("/content", KIT_REPOSITORY.rsplit("/", 1)[1].removesuffix(".git"))
    if not kit.exists():
        subprocess.run(["git", "clone", "--depth=1", "--branch", KIT_REF, "--quiet", KIT_REPOSITORY, str(kit)],
                       check=True)
if kit is None:
    sys.exit(f"This notebook belongs to a kit: git clone {{KIT_REPOSITORY}}, then see its README.")
# The result (the file's globals) is not shown: "_ =" keeps the output to its advice.
_ = runpy.run_path(str(kit / "tutorial_helpers/workshop/setup_check.py"), run_name="__main__")"""


def first_cell(clone_url: str, ref: str) -> str:
    """The source of every notebook's first code cell after the licence.

    `ref` is the branch or tag whose notebooks the buttons open
    (`project_links.BRANCH`): on Colab the cell clones the kit at that ref,
    so a notebook opened from a release runs with that release's helpers.
    """
    return FIRST_CELL.format(clone_url=clone_url, ref=ref)


class NotReady(Exception):
    """Stops "Run all" with the advice only, not a traceback through this file."""

    def _render_traceback_(self):  # IPython shows these lines instead of a traceback.
        return [str(self)]


def main(facts: Facts | None = None) -> Advice:
    advice = decide(facts or gather())
    if advice.action == "ready":
        print(advice.message)
        return advice
    if advice.action == "install":
        print("Installing the kit's pinned environment (a few minutes)...", flush=True)
        for command in advice.commands:
            subprocess.run(command, check=True)
    raise NotReady(advice.message)


if __name__ == "__main__":
    main()
