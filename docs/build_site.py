"""Builds the kit's docs site from executed notebooks, without executing them.

    .venv/bin/python docs/build_site.py [--notebooks DIR] [--out DIR]

``--notebooks`` is the folder of executed notebooks: ``build/`` after
scripts/run_tutorial (the default), or ``notebooks/`` for the outputs stored in
the repository. The site is written to ``--out`` (default ``build/site``); its
entry page is ``index.html``, which works opened from disk or from any static
server, with no network.

Staging: this folder's pages, the README, the notebooks and their images are
copied into ``<out>-src``, with two changes to each notebook. Its button row
is made again by ``project_links.button_row`` with the kit's own icons from
``_static/buttons`` instead of tensorflow.org's, so the pages load offline.
And its copyright heading and licence cell, which Colab folds away,
become one line at the foot of the page, so that the title heads it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(ROOT))  # Run as a script: tutorial_helpers from this clone.
from tutorial_helpers.workshop import project_links  # noqa: E402

# The button row's icons on the site: the kit's own, so that pages load offline.
SITE_ICONS = {key: f"../_static/buttons/{key}.svg" for key in project_links.NOTEBOOK_ICONS}
# The chapters, in the order scripts/run_tutorial runs them: the numbered
# notebooks, then the one-page tutorial.
ORDER = [p.stem for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))] + ["loading_remote_data"]


LICENCE_NOTE = (
    "{holder} Licensed under the [Apache License, Version 2.0]"
    "(https://www.apache.org/licenses/LICENSE-2.0)."
)


def _for_the_site(notebook: dict, name: str, urls: project_links.Urls) -> dict:
    """The notebook as a page: title first, local button icons, the licence at the foot.

    TensorFlow's template opens with a "##### Copyright" heading and the licence
    cell, which Colab folds away; on a page the first heading is the title, so
    they become one line at the end, as on tensorflow.org. The setup cell,
    which Colab shows as a form, is folded behind a "Show code cell source"
    toggle (myst-nb's hide-input tag; nbfmt keeps no tags in the notebooks).
    """
    cells = notebook["cells"]
    holder = "".join(cells[0]["source"]).lstrip("#").strip()
    if holder.startswith("Copyright") and "".join(cells[1]["source"]).startswith("#@title Licensed"):
        del cells[:2]
        cells.append({"cell_type": "markdown", "metadata": {}, "source": [LICENCE_NOTE.format(holder=holder)]})
    for cell in cells:
        if cell["cell_type"] == "code" and "".join(cell["source"]).startswith("#@title Setup"):
            cell["metadata"].setdefault("tags", []).append("hide-input")
        if "tfo-notebook-buttons" in "".join(cell["source"]):
            row = project_links.button_row(urls, f"notebooks/{name}.ipynb", icons=SITE_ICONS)
            cell["source"] = row.splitlines(keepends=True)
    return notebook


def _refuse_to_replace(folder: pathlib.Path, kind: str) -> None:
    """Stops before deleting a folder that is not an earlier build."""
    protected = [ROOT, DOCS, ROOT / "notebooks", ROOT / "tutorial_helpers", ROOT / "build"]
    if any(folder == p or folder in p.parents for p in protected) or folder in (folder.home(), pathlib.Path("/")):
        raise SystemExit(f"build_site: will not replace {folder}; give --out a folder of its own, e.g. build/site")
    marker = ".buildinfo" if kind == "site" else "conf.py"
    if folder.exists() and not (folder / marker).is_file():
        raise SystemExit(
            f"build_site: {folder} exists and is not an earlier {kind} build (no {marker}); "
            "remove it yourself or choose another --out"
        )


def stage(notebooks: pathlib.Path, src: pathlib.Path) -> list[str]:
    """Copies everything the site is made of into ``src``; returns the notebook names."""
    missing = [name for name in ORDER if not (notebooks / f"{name}.ipynb").is_file()]
    if missing:
        raise SystemExit(
            f"build_site: {notebooks} has no {', '.join(m + '.ipynb' for m in missing)}. "
            "Run scripts/run_tutorial first, or pass --notebooks notebooks for the stored outputs."
        )
    _refuse_to_replace(src, "staging")
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(DOCS, src, ignore=shutil.ignore_patterns("__pycache__", "build_site.py"))
    # The pages link the notebooks as ../notebooks/X.ipynb, right on GitHub;
    # on the site the notebooks are in notebooks/ next to them.
    for page in src.glob("*.md"):
        page.write_text(page.read_text().replace("](../notebooks/", "](notebooks/"))
    # The README, whose notebook table and workshop paths the landing page includes.
    (src / "_kit").mkdir()
    shutil.copy(ROOT / "README.md", src / "_kit/README.md")
    (src / "notebooks").mkdir()
    shutil.copytree(ROOT / "notebooks/images", src / "notebooks/images")
    urls = project_links.read_urls()
    for name in ORDER:
        notebook = json.loads((notebooks / f"{name}.ipynb").read_text())
        # nbfmt drops language_info from the stored notebooks; the highlighter needs it.
        notebook["metadata"].setdefault("language_info", {"name": "python"})
        (src / "notebooks" / f"{name}.ipynb").write_text(json.dumps(_for_the_site(notebook, name, urls)))
    return ORDER


def pages_of(site: pathlib.Path) -> list[pathlib.Path]:
    """The site's pages: every HTML file but the theme's templates in _static."""
    return sorted(p for p in site.rglob("*.html") if "_static" not in p.relative_to(site).parts)


def build(notebooks: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    src = out.with_name(out.name + "-src")
    start = time.monotonic()
    _refuse_to_replace(out, "site")
    stage(notebooks, src)
    if out.exists():
        shutil.rmtree(out)
    # myst-nb writes the notebooks' outputs next to the site, in ../jupyter_execute.
    scratch = out.parent / "jupyter_execute"
    scratch_was_there = scratch.exists()
    # autodoc imports tutorial_helpers, hence TensorFlow: keep its start-up log
    # quiet. Sphinx ends with os._exit, because at a normal interpreter exit the
    # execution context TFF makes at import prints an ignored exception from its
    # __del__ (it never started a worker: nothing here runs a computation).
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    sphinx = (
        "import os, sys; from sphinx.cmd.build import main; code = main(sys.argv[1:]); "
        "sys.stdout.flush(); sys.stderr.flush(); os._exit(code)"
    )
    result = subprocess.run(
        [sys.executable, "-c", sphinx, "-b", "html", "-q", "-W", "--keep-going",
         "-d", str(out.with_name(out.name + "-doctrees")), str(src), str(out)],
        cwd=ROOT, env=env,
    )  # fmt: skip
    if not scratch_was_there:
        shutil.rmtree(scratch, ignore_errors=True)
    if result.returncode != 0:
        raise SystemExit(f"build_site: Sphinx failed (exit {result.returncode}); see above.")
    pages = len(pages_of(out))
    print(f"build_site: {pages} pages in {time.monotonic() - start:.0f} s -> {out / 'index.html'}")
    return out / "index.html"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=pathlib.Path, default=ROOT / "build")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "build/site")
    args = parser.parse_args(argv)
    build(args.notebooks.resolve(), args.out.resolve())


if __name__ == "__main__":
    main()
