"""A site's audit log, `audit.log`: one line per call the gatekeeper saw, and what it did with it.

Each line is a number, a link, a UTC time, the call, its bytes in and out,
the verdict (forwarded, refused, error) and, after two dashes, a detail. Lines
are only ever appended, one `write` each, under a lock (two gatekeepers of
one site may share the file). Text from the controller or the worker (in an
error) is escaped, so it cannot start a line of its own.

The log is a chain: each line carries its number and the first 16 hex digits
of the SHA-256 of the line before it. `read_audit_log` checks the chain and
raises `BrokenAuditLog` naming the first line deleted, inserted, reordered or
changed, so that whoever owns the file (in notebook 08, the controller's own
user) cannot quietly remove a refusal. What the chain does not stop: whoever
can write the file can rewrite it whole, every line after the change
recomputed. What would: the head of the chain (the last line's number and
hash) kept where the log's owner cannot change it, such as in each answer to
the controller, or in another site's log.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import os
import threading
from pathlib import Path

__all__ = ["AUDIT_LOG", "AuditLog", "BrokenAuditLog", "audit_log_problems", "read_audit_log"]

AUDIT_LOG = "audit.log"
_GENESIS = "0" * 16  # The link of the first line: there is no line before it.


def _link(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()[:16]


def _last_line(fd: int) -> bytes:
    """The file's last line (without its newline), b"" for an empty file; read from the end."""
    size = os.fstat(fd).st_size
    if size == 0:
        return b""
    chunk, start = b"", size
    while b"\n" not in chunk.rstrip(b"\n") and start > 0:
        start = max(0, start - 4096)
        chunk = os.pread(fd, size - start, start)
    return chunk.rstrip(b"\n").rsplit(b"\n", 1)[-1]


class AuditLog:
    """The site's audit log: one numbered, chained line per call, appended, never rewritten."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        # Text from the controller or the worker (in errors) cannot start a line of its own.
        text = text.encode("unicode_escape").decode("ascii")
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)  # Another gatekeeper of the site may append too.
            try:
                last = _last_line(self._fd)
                number = int(last.split(b" ", 1)[0]) + 1 if last[:1].isdigit() else 1
                link = _link(last) if last else _GENESIS
                os.write(self._fd, f"{number} {link} {stamp} {text}\n".encode())  # At the end: O_APPEND.
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


class BrokenAuditLog(ValueError):
    """An audit log whose chain is broken: a line was deleted, inserted, moved or changed."""


def audit_log_problems(folder: str | os.PathLike) -> list[str]:
    """Where the chain of the audit log in `folder` breaks, each naming the line; [] if it holds."""
    path = Path(folder) / AUDIT_LOG
    problems, previous = [], None
    for index, line in enumerate(path.read_bytes().splitlines() if path.exists() else [], start=1):
        number, link, *_ = line.split(b" ", 2) + [b"", b""]
        expected_link = _GENESIS if previous is None else _link(previous)
        if not number.isdigit():
            problems.append(f"{path}, line {index}: not a numbered line of the chain")
        elif int(number) != index:
            problems.append(f"{path}, line {index}: numbered {int(number)}, so "
                            + (f"{int(number) - index} line(s) before it are missing" if int(number) > index
                               else "a line was inserted or repeated before it"))
        elif link.decode(errors="replace") != expected_link:
            problems.append(f"{path}, line {index}: its link does not match the line before it, which was "
                            "changed, or lines were deleted and renumbered")
        if problems:
            break  # After the first break, every later line would be reported too.
        previous = line
    return problems


def read_audit_log(folder: str | os.PathLike) -> list[dict[str, str]]:
    """The audit log's call lines, each as a dict: number, time, call, in, out, verdict, detail (and code).

    [] if the site's gatekeeper has not run yet. Raises `BrokenAuditLog`,
    naming the first broken line, if the chain does not hold (see the
    module's docstring for what that does and does not catch).
    """
    problems = audit_log_problems(folder)
    if problems:
        raise BrokenAuditLog("The site's audit log has been tampered with: " + "; ".join(problems))
    path = Path(folder) / AUDIT_LOG
    entries = []
    for line in (path.read_text().splitlines() if path.exists() else []):
        number, _link_, rest = line.split(" ", 2)
        head, _, detail = rest.partition(" -- ")
        stamp, _, call_and_fields = head.partition(" ")
        call, *pairs = call_and_fields.split(" ") if call_and_fields else [""]
        fields = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
        if "verdict" in fields:  # Not the lines that say the gatekeeper started or stopped.
            entries.append({"number": number, "time": stamp, "call": call, **fields, "detail": detail})
    return entries
