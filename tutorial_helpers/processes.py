"""Child processes the kit starts and always stops.

Every process the kit starts (TFF workers, data services) is a
`ManagedProcess`: its output goes to a log file, shown in errors when it
fails, and it is stopped on `stop()`, on leaving a `with` block, at
interpreter exit and, on Linux, when the parent process dies even by SIGKILL
(`setpriv --pdeathsig`), so a killed Jupyter kernel leaves nothing behind.
The kernel delivers that signal when the *thread* that started the child
ends, so start processes from a long-lived thread, such as the main one.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import weakref


def _stop(process: subprocess.Popen, log_file) -> None:
    """Stops `process` (SIGTERM, then SIGKILL after 5 s) and closes its log."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log_file.close()


class ManagedProcess:
    """Starts `args` as a child process that the kit always stops.

    Args:
      args: the command line.
      description: how errors name it, e.g. "TFF worker".
    """

    def __init__(self, args: list[str], description: str):
        self.description = description
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed by _stop)
            mode="w+b", prefix=description.replace(" ", "_") + "_", suffix=".log"
        )
        setpriv = shutil.which("setpriv")
        if setpriv:  # util-linux: the kernel sends SIGTERM if we die first.
            args = [setpriv, "--pdeathsig", "TERM", "--", *args]
        self._process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        self._finalizer = weakref.finalize(self, _stop, self._process, self._log)

    @property
    def pid(self) -> int:
        return self._process.pid

    def is_running(self) -> bool:
        return self._process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        """Returns the last `lines` lines the process wrote."""
        if self._log.closed:
            return "(log closed)"
        self._log.flush()
        with open(self._log.name, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:]) or "(empty)"

    def check_alive(self) -> None:
        """Raises RuntimeError, with the process's last log lines, if it has exited."""
        code = self._process.poll()
        if code is not None:
            how = (f"was killed by {signal.Signals(-code).name}" if code < 0
                   else f"exited with code {code}")
            raise RuntimeError(f"{self} is not running: it {how}. Its log ends with:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stops the process and waits for it to exit. Safe to call twice."""
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __str__(self) -> str:
        return f"{self.description} (pid {self.pid})"
