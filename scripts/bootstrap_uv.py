"""Gets the lock's uv without pip or a venv, for a machine with no Python 3.11.

scripts/setup needs uv to install a Python 3.11 (`uv python install`) where
the machine has none. The Python it has may lack pip and venv (Ubuntu's
python3 without python3-pip and python3-venv), so this script uses the
standard library only, runs on any Python 3.8 or newer, and does one thing:
it takes the uv wheel for Linux x86-64 that the lock pins, from the
wheelhouse or the package index, checks its SHA-256 against the lock's
hashes, and extracts the `uv` program from it.

    python3 scripts/bootstrap_uv.py uv LOCK DEST [--wheelhouse DIR]
    python3 scripts/bootstrap_uv.py python-archive URL DIR

The second form is scripts/wheelhouse's: it saves the archive of a managed
Python at URL under DIR/<release>/<file>, the layout that uv reads back with
`--mirror file://DIR`. uv checks the archive's hash when it installs it.

The index is the first of the variables UV_DEFAULT_INDEX, UV_INDEX_URL and
PIP_INDEX_URL that is set, else PyPI (pip.conf and uv.toml are not read).
urllib uses the system's certificate store and the
usual proxy variables (HTTPS_PROXY, NO_PROXY), as pip does. Exit codes: 0
done, 1 a download or a check failed (the message says which), 2 bad
arguments or a platform the kit does not support.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import platform
import re
import sys
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

# The wheel of uv that runs on the kit's platform (glibc Linux on x86-64).
WHEEL_PLATFORM = "manylinux_2_17_x86_64.manylinux2014_x86_64"
# pip's default index, used when none is configured.
PYPI = "https://pypi.org/simple"


class BootstrapError(Exception):
    """A failure with a message that says what to do; exit code 1."""


def uv_pin(lock: Path) -> tuple[str, set[str]]:
    """The version of uv that the lock pins, and the lock's SHA-256 hashes for it."""
    version, hashes, inside = None, set(), False
    for line in lock.read_text().splitlines():
        match = re.match(r"^uv==(\S+)", line)
        if match:
            version, inside = match.group(1), True
        elif inside and re.match(r"^[A-Za-z0-9]", line):
            break
        if inside:
            hashes.update(re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
    if version is None or not hashes:
        raise BootstrapError(f"{lock} pins no uv with hashes; run scripts/lock")
    return version, hashes


def wheel_name(version: str) -> str:
    return f"uv-{version}-py3-none-{WHEEL_PLATFORM}.whl"


def index_url() -> str:
    """The package index the learner configured for uv or pip, else pip's default."""
    for variable in ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL"):
        if os.environ.get(variable):
            return os.environ[variable].rstrip("/")
    return PYPI


def without_credentials(url: str) -> str:
    """`url` with any user:password@ removed, for messages."""
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def download(url: str, what: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.read()
    except (OSError, http.client.HTTPException, ValueError) as error:
        # URLError, timeouts and certificate errors are OSErrors; a malformed
        # address is an HTTPException (InvalidURL) or a ValueError.
        hint = ""
        if "CERTIFICATE_VERIFY_FAILED" in str(error):
            hint = (" The machine does not trust the server's certificate: behind a TLS-inspecting"
                    " proxy, install the proxy's certificate into the system's store.")
        shown = without_credentials(url)
        reason = str(error).replace(url, shown)
        raise BootstrapError(f"could not download {what} from {shown}: {reason}.{hint}") from None


def wheel_from_index(name: str) -> bytes:
    """The wheel's bytes, found by name in the index's page for uv (PEP 503)."""
    index = index_url()
    page_url = f"{index}/uv/"
    page = download(page_url, "the index's page for uv").decode("utf-8", "replace")
    for href in re.findall(r'href="([^"]+)"', page):
        path = urllib.parse.urlsplit(href).path
        if urllib.parse.unquote(path.rsplit("/", 1)[-1]) == name:
            return download(urllib.parse.urljoin(page_url, href.split("#")[0]), name)
    raise BootstrapError(f"{without_credentials(page_url)} lists no {name}; is the index a full mirror of PyPI?")


def get_uv(lock: Path, dest: Path, wheelhouse: Path | None) -> None:
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        print(f"bootstrap_uv: the kit runs on Linux x86-64 (TFF 0.87's wheels), not on "
              f"{platform.system()} {platform.machine()}", file=sys.stderr)
        raise SystemExit(2)
    version, hashes = uv_pin(lock)
    name = wheel_name(version)
    if wheelhouse is not None:
        path = wheelhouse / name
        if not path.is_file():
            raise BootstrapError(f"the wheelhouse {wheelhouse} has no {name}; run "
                                 f"scripts/wheelhouse {wheelhouse} on a machine with network")
        data = path.read_bytes()
    else:
        data = wheel_from_index(name)
    digest = hashlib.sha256(data).hexdigest()
    if digest not in hashes:
        raise BootstrapError(f"{name} has SHA-256 {digest}, which is not one of the lock's "
                             f"hashes for uv=={version}: the file is damaged or not the one "
                             f"the lock was made with")
    with zipfile.ZipFile(io.BytesIO(data)) as wheel:
        program = f"uv-{version}.data/scripts/uv"
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".partial")
        partial.write_bytes(wheel.read(program))
    partial.chmod(0o755)
    partial.replace(dest)


def save_python_archive(url: str, folder: Path) -> Path:
    """Saves URL's archive as folder/<release>/<file>, as uv's --mirror expects."""
    release, file = [urllib.parse.unquote(part) for part in url.rstrip("/").split("/")[-2:]]
    dest = folder / release / file
    if dest.is_file():
        return dest
    data = download(url, "a Python 3.11 archive")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    partial.write_bytes(data)
    partial.replace(dest)
    return dest


def main(argv: list[str]) -> int:
    try:
        if len(argv) in (3, 5) and argv[0] == "uv" and (len(argv) == 3 or argv[3] == "--wheelhouse"):
            get_uv(Path(argv[1]), Path(argv[2]), Path(argv[4]) if len(argv) == 5 else None)
        elif len(argv) == 3 and argv[0] == "python-archive":
            print(save_python_archive(argv[1], Path(argv[2])))
        else:
            print(__doc__.split("\n\n")[1], file=sys.stderr)
            return 2
    except BootstrapError as error:
        print(f"bootstrap_uv: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
