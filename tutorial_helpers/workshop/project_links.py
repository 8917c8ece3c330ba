"""Where the kit lives on the web, kept in one place: pyproject.toml's ``project.urls``.

Its ``Repository`` (a GitHub address) and ``Documentation`` (the docs site)
are the only copies of the kit's addresses. Everything else that carries them
is made from them here:

* each notebook's button row (the kit's site, Colab, GitHub, download), in
  the layout TensorFlow's ``nblint`` checks;
* the README's Binder and Colab badges and its ``git clone`` command;
* the first code cell of every notebook, which clones the kit on Colab.

``python -m tutorial_helpers.workshop.project_links`` rewrites them all after the
address changes; ``--check`` only lists what disagrees (the tests run it).
Standard library only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import re
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]  # The kit: tutorial_helpers/workshop/ is two down.
BRANCH = "main"
_GITHUB = re.compile(r"^https://github\.com/([\w.-]+/[\w.-]+?)/?$")


@dataclasses.dataclass(frozen=True)
class Urls:
    """The kit's addresses: ``repo`` is "owner/name" on GitHub, ``site`` ends in "/"."""

    repo: str
    site: str

    @property
    def repository(self) -> str:
        return f"https://github.com/{self.repo}"

    @property
    def clone(self) -> str:
        return f"https://github.com/{self.repo}.git"


def read_urls(root: pathlib.Path | None = None) -> Urls:
    """Reads ``Repository`` and ``Documentation`` from ``root/pyproject.toml`` (root: the kit's folder)."""
    path = (ROOT if root is None else root) / "pyproject.toml"
    urls = tomllib.loads(path.read_text())["project"].get("urls", {})
    missing = [key for key in ("Repository", "Documentation") if key not in urls]
    if missing:
        raise ValueError(f"{path}: [project.urls] needs {' and '.join(missing)}.")
    match = _GITHUB.match(urls["Repository"])
    if not match:
        raise ValueError(
            f"{path}: project.urls Repository must look like https://github.com/OWNER/NAME, "
            f"not {urls['Repository']!r} (the Colab and Binder buttons need a GitHub repository)."
        )
    site = urls["Documentation"]
    if not site.startswith("https://"):
        raise ValueError(f"{path}: project.urls Documentation must be an https:// address.")
    return Urls(repo=match.group(1), site=site.rstrip("/") + "/")


# The buttons' icons in the notebooks: TensorFlow's, as its template and nblint
# expect (the site's pages use local copies: docs/build_site.py).
NOTEBOOK_ICONS = {
    "site": "",
    "colab": "https://www.tensorflow.org/images/colab_logo_32px.png",
    "github": "https://www.tensorflow.org/images/GitHub-Mark-32px.png",
    "download": "https://www.tensorflow.org/images/download_logo_32px.png",
}


def button_row(urls: Urls, notebook: str, icons: dict[str, str] = NOTEBOOK_ICONS) -> str:
    """The button row of ``notebook`` (a path such as "notebooks/01_preprocessing.ipynb").

    ``icons`` gives each button's image ("" for none), keyed as in ``NOTEBOOK_ICONS``.
    """
    page = notebook.removesuffix(".ipynb") + ".html"
    buttons = [
        (f"{urls.site}{page}", icons["site"], "View on the kit's site"),
        (
            f"https://colab.research.google.com/github/{urls.repo}/blob/{BRANCH}/{notebook}",
            icons["colab"],
            "Run in Google Colab",
        ),
        (
            f"https://github.com/{urls.repo}/blob/{BRANCH}/{notebook}",
            icons["github"],
            "View source on GitHub",
        ),
        (
            f"https://raw.githubusercontent.com/{urls.repo}/{BRANCH}/{notebook}",
            icons["download"],
            "Download notebook",
        ),
    ]
    cells = []
    for href, image, text in buttons:
        img = f'<img src="{image}" />' if image else ""
        cells.append(f'  <td>\n    <a target="_blank" href="{href}">{img}{text}</a>\n  </td>')
    return '<table class="tfo-notebook-buttons" align="left">\n' + "\n".join(cells) + "\n</table>"


def readme_links(urls: Urls) -> dict[str, str]:
    """The README's lines that carry the address, by what they are."""
    colab = (
        f"https://colab.research.google.com/github/{urls.repo}/blob/{BRANCH}/"
        "notebooks/loading_remote_data.ipynb"
    )
    binder = f"https://mybinder.org/v2/gh/{urls.repo}/HEAD?labpath=notebooks"
    name = urls.repo.split("/")[1]
    return {
        "binder badge": f"[![Binder](https://mybinder.org/badge_logo.svg)]({binder})",
        "colab badge": (
            f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab})"
        ),
        "clone command": f"git clone {urls.clone} && cd {name}",
    }


_BUTTONS = re.compile(r"tfo-notebook-buttons")
_CLONE_IN_CELL = re.compile(r'^(KIT_REPOSITORY = )"[^"]*"$', re.M)
_REF_IN_CELL = re.compile(r'^(KIT_REF = )"[^"]*"', re.M)


def _notebook_changes(urls: Urls, path: pathlib.Path, root: pathlib.Path):
    notebook = json.loads(path.read_text())
    rel = path.relative_to(root).as_posix()
    changed = []
    rows = [c for c in notebook["cells"] if _BUTTONS.search("".join(c["source"]))]
    if len(rows) != 1:
        changed.append(f"{rel}: has {len(rows)} button rows, expected 1")
    for cell in rows:
        want = button_row(urls, rel)
        if "".join(cell["source"]) != want:
            cell["source"] = want.splitlines(keepends=True)
            changed.append(f"{rel}: button row")
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        fixed = _CLONE_IN_CELL.sub(rf'\1"{urls.clone}"', source)
        fixed = _REF_IN_CELL.sub(rf'\1"{BRANCH}"', fixed)
        if fixed != source:
            cell["source"] = fixed.splitlines(keepends=True)
            changed.append(f"{rel}: first cell's clone address or version")
    return notebook, changed


def sync(root: pathlib.Path | None = None, check: bool = False) -> list[str]:
    """Makes every copy of the addresses agree with pyproject.toml.

    Returns what disagreed ("file: what"); with ``check`` nothing is written.
    `root` is the kit's folder, by default the one this file is in.
    """
    root = ROOT if root is None else root
    urls = read_urls(root)
    problems = []
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        notebook, changed = _notebook_changes(urls, path, root)
        problems += changed
        if changed and not check and not any("expected 1" in c for c in changed):
            path.write_text(json.dumps(notebook, indent=2, ensure_ascii=False) + "\n")
            subprocess.run(
                [sys.executable, "-m", "tensorflow_docs.tools.nbfmt", str(path)],
                check=True,
                capture_output=True,
            )
    lines = readme_links(urls)
    for page in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = original = page.read_text()
        rel = page.relative_to(root).as_posix()
        patterns = {
            "binder badge": r"^\[!\[Binder\]\(.*$",
            "colab badge": r"^\[!\[Open In Colab\]\(.*$",
            "clone command": r"^git clone https://\S+ && cd \S+$",
        }
        for what, pattern in patterns.items():
            found = re.findall(pattern, text, re.M)
            if page.name == "README.md" and not found:
                problems.append(f"{rel}: no {what}")
            for old in found:
                if old != lines[what]:
                    problems.append(f"{rel}: {what}")
                    text = text.replace(old, lines[what])
        if text != original and not check:
            page.write_text(text)
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only list what disagrees")
    args = parser.parse_args(argv)
    problems = sync(check=args.check)
    for problem in problems:
        print(("disagrees: " if args.check else "rewrote: ") + problem)
    if args.check and problems:
        print("Run: .venv/bin/python -m tutorial_helpers.workshop.project_links", file=sys.stderr)
        return 1
    print(f"project_links: {len(problems)} {'disagreements' if args.check else 'changes'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
