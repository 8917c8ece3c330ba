"""The first cell of every notebook: its decisions for each place a notebook may run,
and real runs of the cell in the kit's environment and under a Python without TFF."""

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from tutorial_helpers.workshop import project_links, setup_check

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

KIT = setup_check.Facts(
    python=(3, 11),
    system="Linux",
    machine="x86_64",
    colab=False,
    binder=False,
    container=False,
    tff_version="0.87.0",
    helpers_installed=True,
    kit_root=pathlib.Path("/home/learner/loading-remote-data"),
    kit_venv=True,
    in_kit_venv=True,
)
NO_KIT = dataclasses.replace(KIT, tff_version=None, helpers_installed=False)


def decide(**changes):
    return setup_check.decide(dataclasses.replace(KIT, **changes))


def test_ready_wherever_the_kit_is_installed_and_says_the_same_everywhere():
    places = [
        {},
        {"binder": True, "kit_venv": False, "in_kit_venv": False},
        {"container": True, "kit_venv": False, "in_kit_venv": False},
        {"colab": True},  # A Colab runtime after the kit was installed and restarted.
    ]
    messages = {decide(**place).message for place in places}
    assert {decide(**place).action for place in places} == {"ready"}
    assert len(messages) == 1  # nbval compares this line: it must not depend on the place.
    assert "0.87.0" in messages.pop()


@pytest.mark.parametrize("minor", [12, 13])
def test_colab_with_a_python_tff_cannot_use_stops_and_lists_what_works(minor):
    advice = setup_check.decide(dataclasses.replace(NO_KIT, colab=True, python=(3, minor)))
    assert advice.action == "stop"
    assert f"Python 3.{minor}" in advice.message and "3.9 to 3.11" in advice.message
    for way in ("Binder", "Codespace", "Docker", "local runtime", "2025.07"):
        assert way in advice.message
    assert not advice.commands


def test_colab_with_python_3_11_installs_the_lock_without_dependencies_then_asks_for_a_restart():
    facts = dataclasses.replace(NO_KIT, colab=True, kit_root=pathlib.Path("/content/kit"))
    advice = setup_check.decide(facts)
    assert advice.action == "install"
    lock, kit = advice.commands
    assert lock[-3:] == ("--no-deps", "-r", "/content/kit/requirements/requirements.txt")
    assert kit[-3:] == ("--no-deps", "-e", "/content/kit")
    assert "Restart" in advice.message


@pytest.mark.parametrize(
    "system, machine, python",
    [
        ("Darwin", "arm64", (3, 11)),
        ("Darwin", "x86_64", (3, 12)),
        ("Windows", "AMD64", (3, 11)),
        ("Linux", "aarch64", (3, 11)),
        ("Linux", "x86_64", (3, 12)),
        ("Linux", "x86_64", (3, 8)),
    ],
)
def test_a_machine_or_python_tff_cannot_run_on_stops_and_lists_what_works(system, machine, python):
    facts = dataclasses.replace(NO_KIT, system=system, machine=machine, python=python)
    advice = setup_check.decide(facts)
    assert advice.action == "stop"
    assert system in advice.message and machine in advice.message
    assert "Linux x86-64 with Python 3.9 to 3.11" in advice.message
    assert "Containers" in advice.message and "Binder" in advice.message


def test_the_wrong_kernel_next_to_a_set_up_kit_is_told_which_kernel_to_choose():
    advice = setup_check.decide(dataclasses.replace(NO_KIT, in_kit_venv=False))
    assert advice.action == "advise"
    assert setup_check.KERNEL_DISPLAY in advice.message
    assert "/home/learner/loading-remote-data/.venv" in advice.message


def test_a_clone_not_set_up_yet_is_told_to_run_setup():
    advice = setup_check.decide(dataclasses.replace(NO_KIT, kit_venv=False, in_kit_venv=False))
    assert advice.action == "advise"
    assert "scripts/setup" in advice.message and setup_check.KERNEL_DISPLAY in advice.message


@pytest.mark.parametrize("place", ["binder", "container"])
def test_an_image_without_the_kit_says_to_check_the_kernel_and_the_build(place):
    facts = dataclasses.replace(NO_KIT, kit_venv=False, in_kit_venv=False, **{place: True})
    advice = setup_check.decide(facts)
    assert advice.action == "advise" and "build log" in advice.message


def test_tff_of_another_version_is_not_ready():
    assert decide(tff_version="0.86.0").action == "advise"


def test_gather_finds_this_environment_ready():
    facts = setup_check.gather()
    assert facts.python == (3, 11) and facts.tff_version == "0.87.0" and facts.helpers_installed
    assert setup_check.decide(facts).action == "ready"


def test_main_stops_with_the_advice_and_ipython_shows_only_the_advice():
    facts = dataclasses.replace(NO_KIT, kit_venv=False, in_kit_venv=False)
    with pytest.raises(setup_check.NotReady) as raised:
        setup_check.main(facts)
    assert raised.value._render_traceback_() == [setup_check.decide(facts).message]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_starts_with_the_same_setup_cell_and_it_said_ready(path):
    cells = json.loads(path.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    first = code[1]  # code[0] is the licence.
    want = setup_check.first_cell(project_links.read_urls().clone, project_links.BRANCH)
    assert "".join(first["source"]) == want, "copy setup_check.first_cell(...) into the notebook"
    text = "".join("".join(o.get("text", "")) for o in first["outputs"])
    assert text == setup_check.decide(KIT).message + "\n"
    setup = next(i for i, c in enumerate(cells) if "".join(c["source"]).startswith("## Setup"))
    assert cells[setup + 1] is first, "the setup cell comes right after the Setup heading"


def _python_without_tff():
    for candidate in ("/usr/bin/python3", shutil.which("python3"), shutil.which("python3.11")):
        if not candidate or pathlib.Path(candidate).resolve() == pathlib.Path(sys.executable).resolve():
            continue
        probe = subprocess.run(
            [candidate, "-c", "import importlib.util as u; print(u.find_spec('tensorflow_federated'))"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if probe.returncode == 0 and probe.stdout.strip() == "None":
            return candidate
    pytest.skip("no Python without TensorFlow Federated on this machine to run the cell under")


def _run_first_cell(python, cwd):
    cell = setup_check.first_cell(project_links.read_urls().clone, project_links.BRANCH)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return subprocess.run(
        [python, "-c", cell], cwd=cwd, capture_output=True, text=True, timeout=60, env=env
    )


@pytest.mark.process
def test_the_cell_really_run_in_the_kits_environment_says_ready():
    result = _run_first_cell(sys.executable, ROOT / "notebooks")
    assert result.returncode == 0, result.stderr
    assert result.stdout == setup_check.decide(KIT).message + "\n"


@pytest.mark.process
def test_a_copy_outside_the_kit_run_in_the_kits_environment_says_ready(tmp_path):
    # E.g. scripts/run_tutorial with BUILD_DIR elsewhere, or a notebook saved to ~/Downloads.
    result = _run_first_cell(sys.executable, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == setup_check.decide(KIT).message + "\n"


@pytest.mark.process
def test_the_cell_really_run_under_a_python_without_tff_says_what_to_do(tmp_path):
    python = _python_without_tff()
    # A clone that has not been set up: the cell must say to run scripts/setup.
    clone = tmp_path / "kit"
    shutil.copytree(ROOT / "tutorial_helpers", clone / "tutorial_helpers")
    (clone / "notebooks").mkdir()
    fresh = _run_first_cell(python, clone / "notebooks")
    assert fresh.returncode == 1
    assert f"in {clone}, run\n    scripts/setup" in fresh.stderr
    assert "NotReady" in fresh.stderr  # In Jupyter only the advice shows (tested above).
    # The set-up kit, but a kernel running another Python: choose the kit's kernel.
    other = _run_first_cell(python, ROOT / "notebooks")
    assert other.returncode == 1
    assert f"The kit is set up in {ROOT / '.venv'}" in other.stderr
    assert setup_check.KERNEL_DISPLAY in other.stderr
    # A notebook copied out of the kit: how to get the kit.
    alone = _run_first_cell(python, tmp_path)
    assert alone.returncode == 1
    assert f"git clone {project_links.read_urls().clone}" in alone.stderr


def test_a_set_up_kit_opened_with_another_pythons_kernel_is_told_to_change_kernel():
    # E.g. Ubuntu 24.04's Python 3.12 kernel chosen next to the kit's .venv.
    facts = dataclasses.replace(NO_KIT, python=(3, 12), in_kit_venv=False)
    advice = setup_check.decide(facts)
    assert advice.action == "advise" and setup_check.KERNEL_DISPLAY in advice.message


def test_a_venv_left_by_a_failed_setup_on_a_mac_is_not_a_set_up_kit(tmp_path):
    # scripts/setup makes .venv first and writes its stamp only when it is done.
    (tmp_path / ".venv").mkdir()
    facts = dataclasses.replace(setup_check.gather(tmp_path), system="Darwin", machine="arm64",
                                tff_version=None, helpers_installed=False)
    assert not facts.kit_venv
    advice = setup_check.decide(facts)
    assert advice.action == "stop" and "Darwin arm64" in advice.message
    (tmp_path / ".venv" / ".kit-installed").write_text("done\n")
    assert setup_check.gather(tmp_path).kit_venv


def test_a_container_on_a_machine_tff_cannot_run_on_says_so_first():
    facts = dataclasses.replace(NO_KIT, container=True, machine="aarch64", kit_venv=False)
    assert setup_check.decide(facts).action == "stop"


def test_the_first_cell_names_the_kernel_setup_registers():
    """setup_check runs by path in kernels without the kit, so it keeps its own copy of the name."""
    from tutorial_helpers import KERNEL_DISPLAY_NAME

    assert setup_check.KERNEL_DISPLAY == KERNEL_DISPLAY_NAME
