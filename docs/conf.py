"""Sphinx configuration of the kit's docs site; scripts/build_site builds it.

build_site.py stages this folder, the README and the executed notebooks into
one source folder and runs Sphinx on it. Notebooks are rendered with the
outputs they already have: myst-nb never executes them here.
"""

from tutorial_helpers import __version__
from tutorial_helpers.workshop import project_links

URLS = project_links.read_urls()

project = "Loading Remote Data in TFF: a hands-on kit"
author = "The TFF Remote Data Kit Authors"
copyright = "2026, The TFF Remote Data Kit Authors"
release = version = __version__

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
exclude_patterns = ["_build", "_kit", "**/.ipynb_checkpoints", "build_site.py"]

# The notebooks were executed by scripts/run_tutorial (or nbval); never twice.
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

# The docstrings mark names with single backquotes: show them as code.
default_role = "literal"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "sphinx_book_theme"
html_title = "Loading Remote Data in TFF"
html_static_path = ["_static"]
# Without an icon, every page load asks for /favicon.ico and logs a 404.
html_favicon = "_static/favicon.svg"
html_css_files = ["kit.css"]
# No copies of the sources: each notebook's own "Download notebook" button
# gives the notebook as it is in the repository.
html_copy_source = False
# pydata-sphinx-theme reads the colour mode from html_context; without one it
# logs "Got invalid theme mode" to the console on a reader's first visit.
html_context = {"default_mode": "auto"}
html_show_sourcelink = False
html_last_updated_fmt = None
# Search summaries are fetched page by page, which browsers refuse to pages
# opened from disk (file://): the results would come with console errors.
html_show_search_summary = False
html_theme_options = {
    "repository_url": URLS.repository,
    "repository_branch": project_links.BRANCH,
    "path_to_docs": "",
    "use_repository_button": False,  # Links out; the site must work offline.
    "use_download_button": False,  # It would offer the staged copy from _sources/.
    "use_fullscreen_button": False,
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
