"""The unprivileged account PostgreSQL runs as when we are root (initdb/postgres refuse root)."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from taskstream.devservices.proc import DevServiceError, file_lock, notice

DEFAULT_SERVICE_USER = "taskstream"
SERVICE_USER_ENV = "TASKSTREAM_SERVICE_USER"


@dataclass(frozen=True)
class ServiceUser:
    name: str
    uid: int
    gid: int

    @classmethod
    def owner_of(cls, path: Path) -> ServiceUser:
        info = path.stat()
        try:
            name = pwd.getpwuid(info.st_uid).pw_name
        except KeyError:  # a uid without a passwd entry (e.g. a data dir copied in)
            name = f"uid {info.st_uid}"
        return cls(name, info.st_uid, info.st_gid)


def _lookup(name: str) -> ServiceUser | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return ServiceUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def service_user() -> ServiceUser | None:
    """None when not root (servers run as ourselves); otherwise the account to drop to.

    `$TASKSTREAM_SERVICE_USER` (default `taskstream`) is created as a system account if
    missing; if that cannot be done, an existing `postgres` account is used.
    """
    if os.geteuid() != 0:
        return None
    name = os.environ.get(SERVICE_USER_ENV, DEFAULT_SERVICE_USER)
    found = _lookup(name)
    if found is not None:
        return found
    with file_lock(Path("/tmp/.devservices-useradd.lock")):  # noqa: S108 - root-only lock
        found = _lookup(name)
        if found is not None:
            return found
        cmd = [
            "useradd", "--system", "--user-group", "--no-create-home",
            "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name,
        ]  # fmt: skip
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True)  # noqa: S603
            notice(f"created system user {name!r} to run PostgreSQL (it refuses to run as root)")
        except (OSError, subprocess.CalledProcessError) as exc:
            fallback = _lookup("postgres")
            if fallback is not None:
                notice(f"could not create user {name!r} ({exc}); running as 'postgres'")
                return fallback
            raise DevServiceError(
                f"running as root and cannot create the unprivileged user {name!r}: {exc}"
            ) from exc
    created = _lookup(name)
    if created is None:
        raise DevServiceError(f"useradd reported success but user {name!r} does not exist")
    return created


def ensure_traversable(path: Path, user: ServiceUser) -> None:
    """Let `user` reach `path`: add search (x, not read) permission on any ancestor lacking it.

    Needed when the repo lives under a 0700 directory such as /root or pytest's tmp root.
    """
    for part in [path, *path.parents]:
        info = part.stat()
        if info.st_uid == user.uid:
            needed = stat.S_IXUSR
        elif info.st_gid == user.gid:
            needed = stat.S_IXGRP
        else:
            needed = stat.S_IXOTH
        if not info.st_mode & needed:
            os.chmod(part, stat.S_IMODE(info.st_mode) | needed)
            notice(f"added search permission on {part} so user {user.name!r} can reach {path}")


def chown_tree(path: Path, user: ServiceUser) -> None:
    """Give a tree to `user` (used when a data dir was created by another account)."""
    os.chown(path, user.uid, user.gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), user.uid, user.gid, follow_symlinks=False)
