"""A site's policy, in files its owner reads and edits: what it approved, the values it pins, its limits.

* `approved.txt`: one computation per line, its fingerprint then a
  description. ``python -m tutorial_helpers.gatekeeper approve FOLDER
  MODULE:FUNCTION`` adds the computations FUNCTION builds; deleting a line
  withdraws an approval.
* `pins.txt`: ``NAME = NUMBER`` lines (``client_work.learning_rate = 0.02``),
  made by ``python -m tutorial_helpers.gatekeeper pin``; a call of an
  approved computation whose parameter holds a value of that name is
  refused if the controller sent another number.
* `limits.txt`: the site's limits on what leaves it, ``NAME = NUMBER`` lines
  (`LIMITS` lists the names): ``min_clients = 5`` refuses to send back the
  result of a round in which the site has fewer than five clients;
  ``noise_multiplier = 1.0`` adds Gaussian noise to each round's update sum
  (its standard deviation the multiplier times the clipping norm the site
  pins) and withholds the round's metrics and counts; ``epsilon = 8`` and
  ``delta = 1e-5`` are the privacy budget, after which rounds are refused.

* `trusted_controller.txt`: the SHA-256 of the one controller certificate
  the site serves (``python -m tutorial_helpers.gatekeeper trust FOLDER
  CERT.pem``). Without it, any certificate from the workshop's authority
  that names the controller gets in; the authority's holder can make more.

A running gatekeeper holds a `Policy`, which reads the files again whenever
one changes: an approval withdrawn or a value pinned takes effect from the
next call, without a restart. A file that no longer reads (a line broken by
hand) makes the gatekeeper refuse every call until it is fixed: it fails
closed.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

__all__ = ["APPROVALS", "CLIPPING_NORM", "LIMITS", "LIMITS_FILE", "PINS", "TRUSTED_CONTROLLER", "Policy",
           "PolicyState", "approve", "certificate_fingerprint", "pin", "read_approvals", "read_limits", "read_pins",
           "read_trusted_controller", "set_limits", "trust_controller"]

APPROVALS = "approved.txt"
PINS = "pins.txt"
LIMITS_FILE = "limits.txt"
TRUSTED_CONTROLLER = "trusted_controller.txt"
# The limits a site may set, each with what it means and the numbers it takes.
LIMITS = {
    "min_clients": "the fewest of the site's clients a round may have for the site to send back its result "
                   "(a whole number, at least 1)",
    "noise_multiplier": "the site's Gaussian noise on each round's update sum, as a multiple of the clipping norm "
                        "it pins (clipping_norm in pins.txt); the round's metrics and counts are then withheld "
                        "(a number above 0)",
    "epsilon": "the privacy budget: no round is answered that would take the site's epsilon past it, at its "
               "delta (a number above 0; needs noise_multiplier and delta)",
    "delta": "the delta of the privacy budget (a number between 0 and 1, below one over the number of the "
             "site's clients)",
}
# The pin a site's noise needs: the L2 norm at which the approved round clips each client's update.
CLIPPING_NORM = "clipping_norm"
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_PIN_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_APPROVALS_HEADER = """\
# Computations this site runs on its data: one per line, a fingerprint, then what it is.
# Made by `python -m tutorial_helpers.gatekeeper approve`; delete a line to withdraw an approval
# (a running gatekeeper reads this file again before its next call).
"""
_PINS_HEADER = "# Values this site pins: a call that sends another number is refused.\n"


def read_approvals(folder: str | os.PathLike) -> dict[str, str]:
    """{fingerprint: description} from the approval list in `folder`; {} if there is none yet."""
    path = Path(folder) / APPROVALS
    if not path.exists():
        return {}
    approvals = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fingerprint_, _, description = line.partition(" ")
        if not _FINGERPRINT.fullmatch(fingerprint_):
            raise ValueError(f"{path}, line {number}: {line[:80]!r} does not start with a fingerprint (64 "
                             "hex digits). Fix or delete the line; `approve` writes correct ones.")
        approvals[fingerprint_] = description.strip()
    return approvals


def approve(folder: str | os.PathLike, computations: Mapping[str, object]) -> dict[str, str]:
    """Adds the site parts of `computations` ({description: tff.Computation}) to the approval list.

    Returns {fingerprint: description} of what was added (fingerprints
    already on the list are left as they are). Makes `folder` if needed.
    """
    from tutorial_helpers.sites.gatekeeper.fingerprints import fingerprint, site_part

    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    approved = read_approvals(folder)
    added = {}
    for description, computation in computations.items():
        if description.splitlines() != [description]:
            raise ValueError(f"A description must be one line, got {description!r}.")
        value = fingerprint(site_part(computation))
        if value not in approved and value not in added:
            added[value] = description
    path = folder / APPROVALS
    with open(path, "a") as f:
        if f.tell() == 0:
            f.write(_APPROVALS_HEADER)
        for value, description in added.items():
            f.write(f"{value} {description}\n")
    return added


def _pin_line(line: str, path: Path, number: int) -> tuple[str, float] | None:
    """(name, number) of a line of pins.txt; None for a blank or comment line; ValueError otherwise."""
    text = line.split("#", 1)[0].strip()
    if not text:
        return None
    name, sep, value = (part.strip() for part in text.partition("="))
    try:
        if not sep or not _PIN_NAME.fullmatch(name) or not math.isfinite(float(value)):
            raise ValueError
    except ValueError:
        raise ValueError(f"{path}, line {number}: {line!r} is not NAME = NUMBER, a finite number (for "
                         "instance client_work.learning_rate = 0.02).") from None
    return name, float(value)


def read_pins(folder: str | os.PathLike) -> dict[str, float]:
    """The site's pinned values, `pins.txt`: {name: number}; {} if there is no such file.

    One per line, ``NAME = NUMBER``; NAME is the path of a value in a
    computation's parameter, by its names, as short as is unambiguous
    (``client_work.learning_rate``). ``#`` starts a comment.
    """
    path = Path(folder) / PINS
    pins: dict[str, float] = {}
    for number, line in enumerate(path.read_text().splitlines() if path.exists() else [], 1):
        parsed = _pin_line(line, path, number)
        if parsed is not None:
            pins[parsed[0]] = parsed[1]
    return pins


def pin(folder: str | os.PathLike, values: Mapping[str, float]) -> dict[str, float]:
    """Pins `values` ({name: number}) in the site's `pins.txt`, replacing earlier pins of the same names.

    Returns every pin now in the file. The file's other lines, comments
    included, are kept as they were; a pin already there is changed in its
    line, keeping that line's comment; new pins are added at the end. The
    file is replaced in one step (a gatekeeper reading it sees the old file
    or the new one, never half of one), and a running gatekeeper uses the
    new pins from its next call. A name that no approved computation's
    parameter has checks nothing; each call's line in the audit log names
    the pins it checked.
    """
    folder = Path(folder)
    path = folder / PINS
    given = {}
    for name, value in values.items():
        if not _PIN_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a value's name path (for instance client_work.learning_rate).")
        if not math.isfinite(float(value)):
            raise ValueError(f"{name} = {value}: a pin must be a finite number.")
        given[name] = float(value)
    lines = path.read_text().splitlines() if path.exists() else [_PINS_HEADER.rstrip("\n")]
    left = dict(given)
    for number, line in enumerate(lines):
        parsed = _pin_line(line, path, number + 1)
        if parsed is not None and parsed[0] in left:
            comment = line[line.index("#"):] if "#" in line else ""
            lines[number] = f"{parsed[0]} = {left.pop(parsed[0])!r}" + (f"  {comment}" if comment else "")
    lines += [f"{name} = {value!r}" for name, value in left.items()]
    _replace(path, "\n".join(lines) + "\n")
    return read_pins(folder)


def _limit_problem(name: str, value: float) -> str | None:
    """What is wrong with the limit `name` = `value`; None if nothing is."""
    if name not in LIMITS:
        return "it is not a limit this kit knows"
    if name == "min_clients" and (value != int(value) or value < 1):
        return "min_clients is a whole number of at least 1"
    if name in ("noise_multiplier", "epsilon") and not value > 0:
        return f"{name} is a number above 0"
    if name == "delta" and not 0 < value < 1:
        return "delta is a number between 0 and 1"
    return None


def _limits_problem(limits: Mapping[str, float]) -> str | None:
    """What is wrong with a set of limits taken together; None if nothing is."""
    if ("epsilon" in limits) != ("delta" in limits):
        return "a privacy budget needs both epsilon and delta"
    if "epsilon" in limits and "noise_multiplier" not in limits:
        return "a privacy budget (epsilon) needs noise_multiplier: without noise, one round spends it all"
    return None


def _limit_value(name: str, value: float) -> int | float:
    return int(value) if name == "min_clients" else float(value)


def read_limits(folder: str | os.PathLike) -> dict[str, int | float]:
    """The site's limits, `limits.txt`: {name: number}; {} if there is no such file.

    ValueError names the file and line of a limit the kit does not know or
    a number it cannot take, and says what the limits are.
    """
    path = Path(folder) / LIMITS_FILE
    limits: dict[str, int | float] = {}
    for number, line in enumerate(path.read_text().splitlines() if path.exists() else [], 1):
        parsed = _pin_line(line, path, number)
        if parsed is None:
            continue
        name, value = parsed
        problem = _limit_problem(name, value)
        if problem is not None:
            raise ValueError(f"{path}, line {number}: {line!r}: {problem}; the limits are: "
                             + "; ".join(f"{known}, {what}" for known, what in LIMITS.items()) + ".")
        limits[name] = _limit_value(name, value)
    problem = _limits_problem(limits)
    if problem is not None:
        raise ValueError(f"{path}: {problem}. Set it with `python -m tutorial_helpers.gatekeeper limit`.")
    return limits


def set_limits(folder: str | os.PathLike, values: Mapping[str, float]) -> dict[str, int | float]:
    """Sets the site's limits `values` ({name: number}) in `limits.txt`, keeping its other lines; returns them all.

    Replaces the file in one step; a running gatekeeper applies the new
    limits from its next call. Refuses (ValueError, nothing written) a limit
    the kit does not know, a number it cannot take, or a set that does not
    hold together (a budget without noise).
    """
    folder = Path(folder)
    path = folder / LIMITS_FILE
    for name, value in values.items():
        problem = _limit_problem(name, float(value))
        if problem is not None:
            raise ValueError(f"{name} = {value}: {problem}. The limits are: "
                             + "; ".join(f"{known}, {what}" for known, what in LIMITS.items()) + ".")
    current = read_limits(folder)
    problem = _limits_problem({**current, **values})
    if problem is not None:
        raise ValueError(f"{problem}: set them in one command (for instance noise_multiplier=1.0 epsilon=8 "
                         "delta=1e-5).")
    lines = path.read_text().splitlines() if path.exists() else [
        "# What this site lets leave it: a result it would send back otherwise is refused."]
    left = {name: _limit_value(name, float(value)) for name, value in values.items()}
    for index, line in enumerate(lines):
        parsed = _pin_line(line, path, index + 1)
        if parsed is not None and parsed[0] in left:
            lines[index] = f"{parsed[0]} = {left.pop(parsed[0])!r}"
    lines += [f"{name} = {value!r}" for name, value in left.items()]
    _replace(path, "\n".join(lines) + "\n")
    return read_limits(folder)


def certificate_fingerprint(pem: bytes) -> str:
    """The SHA-256, in hex, of a certificate (PEM) as DER: what `trusted_controller.txt` holds."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def trust_controller(folder: str | os.PathLike, certificate: str | os.PathLike) -> str:
    """Makes the certificate file `certificate` (PEM) the only controller certificate the site serves; its SHA-256."""
    value = certificate_fingerprint(Path(certificate).read_bytes())
    _replace(Path(folder) / TRUSTED_CONTROLLER,
             f"# The one controller certificate this site serves: its SHA-256 ({Path(certificate).name}).\n{value}\n")
    return value


def read_trusted_controller(folder: str | os.PathLike) -> str | None:
    """The SHA-256 of the controller certificate the site trusts, `trusted_controller.txt`; None without the file."""
    path = Path(folder) / TRUSTED_CONTROLLER
    if not path.exists():
        return None
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if len(lines) != 1 or not _FINGERPRINT.fullmatch(lines[0]):
        raise ValueError(f"{path} must hold one SHA-256 (64 hex digits); write it with `python -m "
                         "tutorial_helpers.gatekeeper trust FOLDER CERT.pem`.")
    return lines[0]


def _replace(path: Path, text: str) -> None:
    """Writes `text` to `path` in one step: a reader sees the old file or the new one, never half of one."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as f:
            f.write(text)
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


class PolicyState(NamedTuple):
    """What a site's policy says now."""

    approvals: dict[str, str]
    pins: dict[str, float]
    limits: dict[str, int | float]
    controller: str | None = None  # The SHA-256 of the one controller certificate served; None: any.


class Policy:
    """A site's approvals, pins and limits as its files say now: read again whenever a file changes.

    `current()` returns a `PolicyState` (approvals, pins, limits), checking
    the files' size, modification time and inode first (a `stat` each, no
    read when nothing changed). If a file no longer reads, it raises ValueError naming the
    file and line, and keeps raising until the file is fixed: a gatekeeper
    then refuses every call (fails closed). Thread-safe.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._seen: tuple | None = None
        self._values = PolicyState({}, {}, {})
        self._error: ValueError | None = None
        self._lock = threading.Lock()
        self.reloads = 0  # How many times the files were read (the first time included).
        self.current()

    def _stamp(self) -> tuple:
        stamps = []
        for name in (APPROVALS, PINS, LIMITS_FILE, TRUSTED_CONTROLLER):
            try:
                info = os.stat(self.folder / name)
                stamps.append((info.st_ino, info.st_size, info.st_mtime_ns))
            except FileNotFoundError:
                stamps.append(None)
        return tuple(stamps)

    def current(self) -> PolicyState:
        with self._lock:
            stamp = self._stamp()
            if stamp != self._seen:
                self._seen = stamp
                self.reloads += 1
                try:
                    self._values = PolicyState(read_approvals(self.folder), read_pins(self.folder),
                                               read_limits(self.folder), read_trusted_controller(self.folder))
                    self._error = None
                except (OSError, ValueError) as e:
                    self._error = ValueError(f"the site's policy does not read ({e})")
            if self._error is not None:
                raise self._error
            return self._values

    @property
    def approvals(self) -> dict[str, str]:
        return self.current()[0]

    @property
    def pins(self) -> dict[str, float]:
        return self.current()[1]

    @property
    def limits(self) -> dict[str, int | float]:
        return self.current()[2]
