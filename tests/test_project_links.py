"""One source for the kit's addresses: pyproject.toml's project.urls."""

import json
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from tutorial_helpers.workshop import project_links

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = len(list((ROOT / "notebooks").glob("*.ipynb")))


@pytest.mark.process
def test_every_button_badge_and_clone_command_agrees_with_pyproject():
    result = subprocess.run(
        [sys.executable, "-m", "tutorial_helpers.workshop.project_links", "--check"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_other_copy_of_the_address_is_written_anywhere():
    urls = project_links.read_urls()
    owner, name = urls.repo.split("/")
    made = re.compile(rf"(?:github\.com|githubusercontent\.com|gh|github)/{owner}/{name}\b")
    files = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("notebooks/*.ipynb")]
    files += [p for p in (ROOT / "Dockerfile", ROOT / ".devcontainer/devcontainer.json") if p.exists()]
    for path in files:
        text = path.read_text()
        for line in text.splitlines():
            if owner in line and name in line:
                # Any line naming the repository must be one project_links writes.
                ok = made.search(line) or urls.site in line
                assert ok, f"{path.relative_to(ROOT)}: {line.strip()[:120]}"


def _copy(tmp_path):
    root = tmp_path / "kit"
    shutil.copytree(ROOT / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns("figures"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    shutil.copy(ROOT / "README.md", root / "README.md")
    (root / "docs").mkdir()
    return root


@pytest.mark.process
def test_changing_the_address_in_pyproject_rewrites_every_copy(tmp_path):
    root = _copy(tmp_path)
    toml = root / "pyproject.toml"
    toml.write_text(
        toml.read_text()
        .replace("https://github.com/tff-kit/loading-remote-data", "https://github.com/uni-x/fl-kit")
        .replace("https://tff-kit.github.io/loading-remote-data/", "https://uni-x.github.io/fl-kit/")
    )
    before = project_links.sync(root, check=True)
    assert len(before) == NOTEBOOKS * 2 + 3  # Each notebook's button row and setup cell; 3 README lines.
    project_links.sync(root)
    assert project_links.sync(root, check=True) == []
    readme = (root / "README.md").read_text()
    assert "git clone https://github.com/uni-x/fl-kit.git && cd fl-kit" in readme
    assert "mybinder.org/v2/gh/uni-x/fl-kit/HEAD" in readme
    notebook = (root / "notebooks/04_training.ipynb").read_text()
    assert "tff-kit" not in notebook
    assert "https://uni-x.github.io/fl-kit/notebooks/04_training.html" in notebook
    assert "colab.research.google.com/github/uni-x/fl-kit/blob/main/notebooks/04_training.ipynb" in notebook


@pytest.mark.parametrize(
    "repository, message",
    [
        ("https://gitlab.com/a/b", "must look like https://github.com/OWNER/NAME"),
        (None, "needs Repository"),
    ],
)
def test_a_bad_repository_address_is_named(tmp_path, repository, message):
    text = (ROOT / "pyproject.toml").read_text()
    line = 'Repository = "https://github.com/tff-kit/loading-remote-data"'
    assert line in text
    text = text.replace(line, f'Repository = "{repository}"' if repository else "")
    (tmp_path / "pyproject.toml").write_text(text)
    with pytest.raises(ValueError, match=message):
        project_links.read_urls(tmp_path)


@pytest.mark.process
def test_a_release_branch_pins_what_colab_clones(tmp_path, monkeypatch):
    """The buttons' branch and the ref the first cell clones on Colab move together."""
    root = _copy(tmp_path)
    monkeypatch.setattr(project_links, "BRANCH", "v1.0")
    changed = project_links.sync(root, check=True)
    assert sum("first cell" in item for item in changed) == NOTEBOOKS, changed
    project_links.sync(root)
    notebook = json.loads((root / "notebooks/02_data_backend.ipynb").read_text())
    first = next("".join(c["source"]) for c in notebook["cells"] if "KIT_REF" in "".join(c["source"]))
    assert 'KIT_REF = "v1.0"' in first and '"--branch", KIT_REF' in first
    assert "colab.research.google.com/github/tff-kit/loading-remote-data/blob/v1.0/" in json.dumps(notebook)
