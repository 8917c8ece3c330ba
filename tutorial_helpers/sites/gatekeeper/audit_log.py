"""A site's audit log, `audit.log`: one line per call the gatekeeper saw, and what it did with it.

Each line is a UTC time, the call, its bytes in and out, the verdict
(forwarded, refused, error) and a detail after `` -- ``. Lines are only ever
appended, one `write` each. Text from the controller or the worker (in an
error) is escaped, so it cannot start a line of its own. The log is a plain
file: whoever owns it can edit it.
"""

from __future__ import annotations

import datetime
import os
import threading
from pathlib import Path

__all__ = ["AUDIT_LOG", "AuditLog", "read_audit_log"]

AUDIT_LOG = "audit.log"


class AuditLog:
    """The site's audit log: one line per call, appended, never rewritten."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        # Text from the controller or the worker (in errors) cannot start a line of its own.
        text = text.encode("unicode_escape").decode("ascii")
        line = f"{stamp} {text}\n".encode()
        with self._lock:
            os.write(self._fd, line)  # One write per line, at the end: O_APPEND.

    def close(self) -> None:
        os.close(self._fd)


def read_audit_log(folder: str | os.PathLike) -> list[dict[str, str]]:
    """The audit log's call lines, each as a dict: time, call, in, out, verdict, detail (and code).

    [] if the site's gatekeeper has not run yet.
    """
    path = Path(folder) / AUDIT_LOG
    entries = []
    for line in (path.read_text().splitlines() if path.exists() else []):
        head, _, detail = line.partition(" -- ")
        stamp, _, rest = head.partition(" ")
        call, *pairs = rest.split(" ") if rest else [""]
        fields = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
        if "verdict" in fields:  # Not the lines that say the gatekeeper started or stopped.
            entries.append({"time": stamp, "call": call, **fields, "detail": detail})
    return entries
