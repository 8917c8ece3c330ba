"""The user accounts the kit runs processes as: root may start a site's worker as a user of its own."""

from __future__ import annotations

import os

__all__ = ["resolve_user"]


def resolve_user(name: str) -> tuple[int, int]:
    """(uid, gid) of the account `name`, checked to be one a kit process may run as.

    Raises PermissionError unless this process is root (only root can start
    a process as another user), LookupError if there is no such account,
    ValueError if it is root itself (a site's worker must not be able to
    change what guards it). Each error names the account and what to do.
    """
    import pwd

    if os.geteuid() != 0:
        raise PermissionError(f"user={name!r}: only root can start a worker as another user. "
                              "Leave user=None to run it as yourself.")
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        raise LookupError(f"user={name!r}: no such user on this machine. Create it first "
                          f"(useradd --system {name}).") from None
    if account.pw_uid == 0:
        raise ValueError(f"user={name!r} is root: a site's worker must run as a user of its own.")
    return account.pw_uid, account.pw_gid
