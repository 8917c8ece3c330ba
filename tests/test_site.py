"""The docs site: built from the executed notebooks, and read in a real browser.

The site is built once per test session from the outputs stored in
`notebooks/` (about 40 s), or, with `KIT_SITE=build/site`, the one that
`scripts/run_tutorial` left. Then every page is opened in headless Chromium,
Debian's `chromium` driven through Debian's `chromedriver` by selenium, served
from 127.0.0.1 and opened from disk. Each page must load without a console
error, show every image, resolve every internal link and anchor, carry no ANSI
escape code, traceback or home-directory path, and (the notebooks) show the
button row. A screenshot of each page goes to `build/site-screenshots/`, with
`report.json` counting what was checked.

Without Chromium the browser tests skip, saying how to install it:
`sudo apt-get install chromium chromium-driver` (`.ci/run` does that in CI).
"""

import functools
import html.parser
import http.server
import importlib.util
import itertools
import json
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "build" / "site-screenshots"
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
NOTEBOOK_TITLES = {
    stem: "".join(json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())["cells"][2]["source"])
    .removeprefix("# ").strip()
    for stem in NOTEBOOKS
}

def _build_site_module():
    spec = importlib.util.spec_from_file_location("build_site", ROOT / "docs" / "build_site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_site = _build_site_module()


@pytest.fixture(scope="session")
def site() -> Path:
    given = os.environ.get("KIT_SITE")
    if given:
        path = (ROOT / given).resolve()
        if not (path / "index.html").is_file():
            pytest.fail(f"KIT_SITE={given}: no index.html in {path}; run scripts/run_tutorial, or unset KIT_SITE")
        return path
    out = ROOT / "build" / "test-site"
    build_site.build(ROOT / "notebooks", out)
    return out


def pages(site: Path) -> list[str]:
    return [p.relative_to(site).as_posix() for p in build_site.pages_of(site)]


# --- what the build made -----------------------------------------------------


@pytest.mark.install
def test_the_site_has_every_chapter_the_reference_and_a_search(site):
    names = set(pages(site))
    for notebook in NOTEBOOKS:
        assert f"notebooks/{notebook}.html" in names
    assert {"index.html", "migration.html", "instructor_guide.html", "api.html", "search.html"} <= names
    assert (site / "searchindex.js").is_file()
    # The chapters come in order in the landing page's navigation.
    index = (site / "index.html").read_text()
    order = [index.find(f'href="notebooks/{name}.html"') for name in build_site.ORDER]
    assert -1 not in order and order == sorted(order)
    # The landing page says what each notebook teaches and how long it takes.
    assert "your time" in index and "2-hour workshop" in index


@pytest.mark.install
def test_the_api_reference_is_generated_from_the_docstrings(site):
    from tutorial_helpers import remote_data

    api = (site / "api.html").read_text()
    for name in ("DataBackend", "DataExecutor", "create_execution_context"):
        assert f'id="tutorial_helpers.remote_data.{name}"' in api
    first_line = remote_data.DataBackend.__doc__.splitlines()[0]
    assert first_line in api


LOADING_TAGS = ("script", "img", "iframe", "source", "embed", "video", "audio", "track", "input")
REMOTE = re.compile(r"\s*(https?:)?//")


class _Resources(html.parser.HTMLParser):
    """Every src and href of a page, and every id and name it defines."""

    def __init__(self):
        super().__init__()
        self.refs, self.loaded, self.ids = [], [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if attrs.get(key):
                self.refs.append((tag, attrs.get("rel"), attrs[key]))
        # Other ways a tag loads something: srcset, <object data>, inline styles.
        for candidate in (attrs.get("srcset") or "").split(","):
            if candidate.strip():
                self.loaded.append(candidate.split()[0])
        if tag == "object" and attrs.get("data"):
            self.loaded.append(attrs["data"])
        self.loaded += re.findall(r"url\(\s*['\"]?([^'\")]+)", attrs.get("style") or "")
        for key in ("id", "name"):
            if attrs.get(key):
                self.ids.add(attrs[key])


@pytest.mark.install
def test_nothing_is_loaded_from_the_network(site):
    # Scripts, styles, fonts and images are the site's own: it works offline.
    # Links out (Colab, GitHub, tensorflow.org) are fine; they are not loaded.
    for page in pages(site):
        parser = _Resources()
        parser.feed((site / page).read_text())
        for tag, rel, ref in parser.refs:
            loads = tag in LOADING_TAGS or (tag == "link" and rel != "canonical")
            if loads:
                assert not REMOTE.match(ref), f"{page} loads {ref}"
        for ref in parser.loaded:
            assert not REMOTE.match(ref), f"{page} loads {ref}"
    for css in site.rglob("*.css"):
        text = css.read_text(errors="replace")
        for ref in re.findall(r"(?:url\(|@import)\s*['\"]?((?:https?:)?//[^'\")\s;]+)", text):
            pytest.fail(f"{css.relative_to(site)} loads {ref}")


# --- in a real browser -------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def served(site):
    """The site on a plain static server on 127.0.0.1, as a reader might serve it."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


ANSI = re.compile(r"\x1b\[|\[(?:\d{1,3};)*\d{1,3}m")
# TeX between dollars (`$\sigma = 1$`), which Jupyter renders and this site shows as source: it has no
# math renderer, since MathJax would come from the network. Notebooks write such symbols as text (σ = 1).
TEX_SOURCE = re.compile(r"\$(?=[^\s$\d])[^$\n]{1,120}?(?<=[^\s$\\])\$")
HOME = str(Path.home()).rstrip("/") + "/"
# Paths a page must not show: the home folder (unless it is "/") and /home/.
HOME_PATHS = [path for path in {HOME, "/home/"} if path != "/"]
# Generated pages must not show the clone's own folder either (a default argument in
# the API page shows a learner's home when the clone is in it); the instructor guide
# quotes a real transcript, whose folder may be any.
CLONE_PATH = str(ROOT)

IMAGES_JS = """
return Array.from(document.images).map(i => [i.currentSrc || i.src, i.complete, i.naturalWidth]);
"""
LINKS_JS = "return Array.from(document.querySelectorAll('a[href]')).map(a => a.href);"
BUTTONS_JS = """
const article = document.querySelector('article.bd-article').getBoundingClientRect();
return Array.from(document.querySelectorAll('table.tfo-notebook-buttons a')).map(a => {
  const box = a.getBoundingClientRect();
  return [a.textContent.trim(), [box.left, box.right, box.top, box.bottom],
          Array.from(a.querySelectorAll('img')).map(i => i.naturalWidth), article.right];
});
"""


def _open(driver, url):
    driver.get_log("browser")  # Drops what earlier pages logged: only this page's count.
    driver.get(url)
    driver.execute_script("return document.fonts ? document.fonts.ready : null;")


def _page_problems(driver, page) -> tuple[list[str], dict]:
    """What a reader would see wrong on the open page, and what was checked."""
    problems = []
    for entry in driver.get_log("browser"):
        if entry["level"] in ("SEVERE", "ERROR"):
            problems.append(f"console: {entry['message']}")
    images = driver.execute_script(IMAGES_JS)
    for src, complete, width in images:
        if not complete or not width:
            problems.append(f"image not shown: {src}")
    text = driver.execute_script("return document.body.innerText;")
    if ANSI.search(text):
        problems.append(f"ANSI escape code: ...{text[max(0, ANSI.search(text).start() - 60):][:120]!r}")
    tex = TEX_SOURCE.search(text)
    if tex:
        problems.append(f"TeX shown as source: {tex.group(0)!r}; write the symbols as text (σ = 1, not TeX)")
    if "Traceback (most recent call last)" in text:
        problems.append("a traceback")
    generated = page == "api.html" or page.startswith("notebooks/")
    for path in HOME_PATHS + ([CLONE_PATH] if generated else []):
        if path in text:
            problems.append(f"a home-directory path: ...{text[max(0, text.find(path) - 40):][:120]!r}")
    buttons = []
    if page.startswith("notebooks/"):
        buttons = driver.execute_script(BUTTONS_JS)
        labels = [label for label, *_ in buttons]
        expected = ["View on the kit's site", "Run in Google Colab", "View source on GitHub", "Download notebook"]
        if labels != expected:
            problems.append(f"button row {labels}, expected {expected}")
        for label, box, widths, article_right in buttons:
            if not widths or not all(widths):
                problems.append(f"button {label!r} has no icon")
            if box[1] > article_right:
                problems.append(f"button {label!r} runs past the page's text column and is cut off")
        boxes = sorted((box for _, box, _, _ in buttons), key=lambda box: (box[2], box[0]))
        for (_, right, top, _), (left, _, next_top, _) in itertools.pairwise(boxes):
            if abs(top - next_top) < 1 and left - right < 16:
                problems.append("the buttons touch or overlap: they read as one line of text")
        title = driver.execute_script("const h = document.querySelector('h1'); return h ? h.textContent : '';")
        if not title.startswith(NOTEBOOK_TITLES[page.removeprefix("notebooks/").removesuffix(".html")]):
            problems.append(f"the page's first heading is {title!r}, not the notebook's title")
        # The setup cell's 20 lines are folded behind a toggle; its verdict ("Ready") shows.
        folded = driver.execute_script(
            "const cell = Array.from(document.querySelectorAll('.cell_input'))"
            ".find(e => e.textContent.includes('KIT_REPOSITORY'));"
            "if (!cell) return null; const fold = cell.closest('details');"
            "return Boolean(fold) && !fold.open && !cell.checkVisibility();")
        if folded is not True:
            problems.append("the setup cell's code is " + ("missing" if folded is None else "shown in full"))
        if "Ready: TensorFlow Federated" not in text:
            problems.append("the setup cell's verdict is not shown")
    return problems, {"images": len(images), "links": driver.execute_script(LINKS_JS), "buttons": len(buttons)}


class _Targets:
    """Fetches internal link targets once and remembers the anchors each defines."""

    def __init__(self):
        self.ids = {}

    def anchors(self, url: str) -> set[str] | None:
        if url not in self.ids:
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    body = response.read().decode("utf-8", errors="replace")
                    kind = response.headers.get_content_type()
            except (urllib.error.URLError, OSError):
                self.ids[url] = None
            else:
                parser = _Resources()
                if kind == "text/html":
                    parser.feed(body)
                # A link to a folder gets the server's listing: no page of the site.
                listing = kind == "text/html" and "<title>Directory listing for" in body
                self.ids[url] = None if listing else parser.ids
        return self.ids[url]


@pytest.mark.browser
def test_every_page_reads_right_in_chromium(site, served, browser):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    targets, report, failures = _Targets(), {"pages": {}}, {}
    for page in pages(site):
        _open(browser, served + page)
        problems, checked = _page_problems(browser, page)
        internal = external = 0
        for link in checked.pop("links"):
            if not link.startswith(served):
                external += 1
                continue
            internal += 1
            address, _, anchor = link.partition("#")
            ids = targets.anchors(address)
            if ids is None:
                problems.append(f"broken link: {link}")
            elif anchor and urllib.parse.unquote(anchor) not in ids:
                problems.append(f"broken anchor: {link}")
        browser.save_screenshot(str(SCREENSHOTS / (page.replace("/", "__").removesuffix(".html") + ".png")))
        report["pages"][page] = {**checked, "internal_links": internal, "external_links": external}
        if problems:
            failures[page] = problems
    report["totals"] = {key: sum(p[key] for p in report["pages"].values())
                        for key in ("images", "internal_links", "external_links", "buttons")}
    report["totals"]["pages"] = len(report["pages"])
    (SCREENSHOTS / "report.json").write_text(json.dumps(report, indent=1))
    print(f"site: {report['totals']}; screenshots in {SCREENSHOTS}")
    assert not failures, json.dumps(failures, indent=1)
    assert report["totals"]["pages"] >= len(NOTEBOOKS) + 5
    assert report["totals"]["buttons"] == 4 * len(NOTEBOOKS)


@pytest.mark.browser
@pytest.mark.parametrize("page", ["index.html", "notebooks/04_training.html", "api.html"])
def test_pages_opened_from_disk_work_offline(site, browser, page):
    _open(browser, (site / page).as_uri())
    problems, checked = _page_problems(browser, page)
    assert not problems, problems
    # The theme's own styles and scripts came from disk: its layout is there.
    sidebar = browser.execute_script(
        "const s = document.querySelector('.bd-sidebar-primary');"
        "return s ? getComputedStyle(s).display : null;"
    )
    assert sidebar not in (None, "none"), "the theme's layout did not load"
    # A colour only the theme's stylesheet defines: its CSS came from disk.
    colour = browser.execute_script(
        "return getComputedStyle(document.documentElement).getPropertyValue('--pst-color-primary');"
    )
    assert colour.strip(), "the theme's stylesheet did not load"
    if page.startswith("notebooks/"):
        assert checked["images"] > 4, "the notebook's figures and button icons"


@pytest.mark.browser
@pytest.mark.parametrize("where", ["server", "disk"])
def test_search_finds_the_backend(site, served, browser, where):
    base = served if where == "server" else site.as_uri() + "/"
    _open(browser, base + "search.html?q=materialize")
    from selenium.webdriver.support.ui import WebDriverWait

    def results(driver):
        found = driver.find_elements("css selector", "#search-results ul.search li a")
        return [a.get_attribute("href") for a in found] or None

    hrefs = WebDriverWait(browser, 30).until(results)
    assert any("02_data_backend" in href for href in hrefs), hrefs
    assert not [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
