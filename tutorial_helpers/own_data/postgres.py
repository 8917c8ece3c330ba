"""A PostgreSQL server of its own, in a temporary folder, that the tests and the benchmark start and always stop.

The server is Debian's (the `postgresql` package, which `.ci/run` installs
as root, as it does Chromium): its binaries are found on PATH or in
/usr/lib/postgresql/<version>/bin, where Debian keeps them. It listens on
127.0.0.1 only, on a free port, with its unix socket in its own folder, and
asks for a password (SCRAM). PostgreSQL refuses to run as root: as root, the
server runs as an unprivileged account (Debian's `postgres` by default).
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

__all__ = ["MISSING_SERVER", "LocalPostgres", "server_binaries"]

MISSING_SERVER = ("no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin: install "
                  "Debian's server with `apt-get install postgresql` (as .ci/run does)")


def server_binaries() -> dict[str, str] | None:
    """{"initdb": path, "pg_ctl": path} of a PostgreSQL server, the newest Debian version first; None if none."""
    folders = [None] + sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                              key=lambda path: [int(part) for part in Path(path).parent.name.split(".")
                                                if part.isdigit()], reverse=True)
    for folder in folders:
        found = {name: shutil.which(name, path=folder) for name in ("initdb", "pg_ctl")}
        if all(found.values()):
            return found
    return None


class LocalPostgres:
    """A throwaway PostgreSQL server: `start()` makes and starts it, `stop()` stops it and deletes its folder.

    Use it as a context manager (`with LocalPostgres() as server:`), which
    stops it on the way out whatever happened. `url` is its SQLAlchemy URL
    (driver pg8000, user `kit`, a random password, database `postgres`).
    `user`: the account to run the server as when this process is root
    (default `postgres`); ignored otherwise. Raises FileNotFoundError
    (message MISSING_SERVER) without server binaries.
    """

    def __init__(self, *, user: str = "postgres"):
        self.binaries = server_binaries()
        if self.binaries is None:
            raise FileNotFoundError(MISSING_SERVER)
        self.user = user
        self.password = secrets.token_hex(12)
        self.folder: Path | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"postgresql+pg8000://kit:{self.password}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        account = {}
        if os.geteuid() == 0:
            from tutorial_helpers.runtime.accounts import resolve_user

            uid, gid = resolve_user(self.user)
            account = {"user": uid, "group": gid, "extra_groups": []}
        environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        return subprocess.run(args, capture_output=True, text=True, timeout=120, env=environment, cwd=self.folder,
                              **account)

    def start(self) -> LocalPostgres:
        import portpicker

        self.folder = Path(tempfile.mkdtemp(prefix="kit-postgres-"))
        try:
            if os.geteuid() == 0:
                from tutorial_helpers.runtime.accounts import resolve_user

                os.chown(self.folder, *resolve_user(self.user))
            (self.folder / "password").write_text(self.password + "\n")
            if os.geteuid() == 0:
                os.chown(self.folder / "password", *resolve_user(self.user))
            self._check(self._run(self.binaries["initdb"], "-D", str(self.folder / "data"), "-U", "kit",
                                  "--auth=scram-sha-256", f"--pwfile={self.folder / 'password'}", "-E", "UTF8",
                                  "--locale=C"), "initdb")
            self.port = portpicker.pick_unused_port()
            options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.folder} "
                       "-c fsync=off -c full_page_writes=off")
            started = self._run(self.binaries["pg_ctl"], "-D", str(self.folder / "data"), "-l",
                                str(self.folder / "server.log"), "-o", options, "-w", "-t", "60", "start")
            self._check(started, "pg_ctl start")
        except BaseException:
            self.stop()
            raise
        return self

    def _check(self, result: subprocess.CompletedProcess, what: str) -> None:
        if result.returncode != 0:
            log = self.folder / "server.log" if self.folder else None
            tail = log.read_text()[-1500:] if log and log.exists() else ""
            raise RuntimeError(f"PostgreSQL's {what} failed ({result.returncode}): {result.stderr.strip()[-1500:]}"
                               + (f"\nserver log:\n{tail}" if tail else ""))

    def stop(self) -> None:
        """Stops the server (fast shutdown; killed if that fails) and deletes its folder; safe to call twice."""
        if self.folder is None:
            return
        data = self.folder / "data"
        try:
            if (data / "postmaster.pid").exists():
                result = self._run(self.binaries["pg_ctl"], "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop")
                if result.returncode != 0 and (data / "postmaster.pid").exists():
                    os.kill(int((data / "postmaster.pid").read_text().split()[0]), signal.SIGKILL)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
