"""Named volumes: directories in the state directory that outlive the containers using them.

    <state>/volumes/<name>/_data    what the container sees at the mount point (Docker's layout)

A volume is a plain directory bind-mounted into the container; nothing about it is a kernel object
beyond that bind mount, which lives in the container's mount namespace and vanishes with it. So a
volume is data, not residue: `labctl cleanup` leaves volumes alone, `labctl volume rm` removes one.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

from labctl import state
from labctl.errors import LabError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def volumes_dir() -> Path:
    return state.subdir("volumes")


def volume_path(name: str) -> Path:
    if not _NAME.match(name):
        raise LabError(f"bad volume name {name!r}", "volume names use letters, digits, _ . -")
    return volumes_dir() / name / "_data"


def create(name: str, owner: tuple[int, int] | None = None) -> Path:
    """Create the volume if it does not exist (as `docker run -v name:/x` does); returns its data dir.
    owner: the host's (uid, gid) of root in the container that creates it (--userns remap), so that root
    inside owns it; Docker goes further and keeps a remapped daemon's volumes in a directory apart."""
    data = volume_path(name)
    if not data.is_dir():
        data.parent.mkdir(parents=True, exist_ok=True)
        data.mkdir(exist_ok=True)
        if owner:
            os.chown(data, *owner)
        state.atomic_write_json(data.parent / "volume.json", {"name": name, "created": time.time()})
    return data


def exists(name: str) -> bool:
    return volume_path(name).is_dir()


def list_volumes() -> list[dict]:
    out = []
    for entry in sorted(volumes_dir().iterdir()):
        data = entry / "_data"
        if data.is_dir():
            size = sum(f.stat().st_size for f in data.rglob("*") if f.is_file() and not f.is_symlink())
            out.append({"name": entry.name, "path": str(data), "size": size, "users": users_of(entry.name)})
    return out


def users_of(name: str) -> list[str]:
    """Names of the containers (running or not) whose spec mounts the volume."""
    from labctl.containers import store
    return [c.name for c in store.all_containers()
            if any(m.kind == "volume" and m.source == name for m in c.spec.mounts)]


def remove(name: str, force: bool = False) -> None:
    data = volume_path(name)
    if not data.parent.exists():
        raise LabError(f"no such volume: {name}", "`labctl volume ls` lists them")
    users = users_of(name)
    if users and not force:
        raise LabError(f"volume {name} is in use by {', '.join(users)}", "remove those containers first (`labctl rm`)")
    if not state._no_mounts_below(data.parent):
        raise LabError(f"volume {name} is mounted somewhere", "stop the containers that use it")
    shutil.rmtree(data.parent)


def resolve_source(kind: str, source: str, owner: tuple[int, int] | None = None) -> str:
    """The host directory to bind for a mount: a bind's own path, or a named volume's data dir (created
    for `owner` if new). A bind mount is never idmapped nor chowned: with --userns remap the host's files
    show their host owners, unmapped ones as nobody (65534), and root inside gets no more than "other"."""
    if kind == "volume":
        return str(create(source, owner))
    return os.path.abspath(source)
