"""A site's workspace: one folder that holds everything of one site, in three parts.

The layout follows NVFlare's provisioned kits, which keep what a site is
given (``startup/``) apart from what it decides and keeps (``local/``)::

    clinic/
      startup/   ca.pem, cert.pem, key.pem: the site's folder from `python -m tutorial_helpers.tls make`
      local/     approved.txt, pins.txt: the site's policy; audit.log: its record (the gatekeeper's folder)
      data/      catalogue.json, clients/: the site's data root (`sites.data.write_site`)

``python -m tutorial_helpers.site_server --workspace clinic --site clinic
--listen HOST:PORT`` serves it. The site's owner edits ``local/``; the
gatekeeper reads the policy again whenever it changes. Every part is
readable by its owner only.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

__all__ = ["DATA", "LOCAL", "STARTUP", "SiteWorkspace"]

STARTUP, LOCAL, DATA = "startup", "local", "data"


@dataclasses.dataclass(frozen=True)
class SiteWorkspace:
    """The folder `path` of one site: `startup` (TLS), `local` (policy and audit log), `data` (its root)."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def startup(self) -> Path:
        """The site's TLS folder: its certificate and key, and the workshop's authority."""
        return self.path / STARTUP

    @property
    def local(self) -> Path:
        """The gatekeeper's folder: the approval list, the pinned values, the audit log."""
        return self.path / LOCAL

    @property
    def data(self) -> Path:
        """The site's data root: its catalogue and its clients' files."""
        return self.path / DATA

    def missing(self) -> list[str]:
        """What the workspace lacks, each with what to do; [] if nothing."""
        wanted = {
            self.startup / "cert.pem": "copy the site's folder from `python -m tutorial_helpers.tls make` into it",
            self.local / "approved.txt": "approve the training into it (`python -m tutorial_helpers.gatekeeper "
                                         f"approve {self.local} ...`)",
            self.data / "catalogue.json": "write the site's data there (`tutorial_helpers.sites.write_site`)",
        }
        return [f"{path} is missing: {what}" for path, what in wanted.items() if not path.exists()]

    @classmethod
    def make(cls, path: str | os.PathLike, *, tls: str | os.PathLike | None = None) -> SiteWorkspace:
        """Makes the workspace's three folders (mode 0700), and copies the site's TLS folder `tls` into startup/.

        Refuses a folder that already holds any of them: nothing is overwritten.
        """
        workspace = cls(Path(path))
        there = [part for part in (workspace.startup, workspace.local, workspace.data) if part.exists()]
        if there:
            raise FileExistsError(f"{there[0]} already exists: a workspace is made once. Use it as it is, or "
                                  "choose another folder.")
        workspace.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        for part in (workspace.local, workspace.data):
            part.mkdir(mode=0o700)
        if tls is None:
            workspace.startup.mkdir(mode=0o700)
        else:
            shutil.copytree(tls, workspace.startup)
            workspace.startup.chmod(0o700)
        return workspace
