"""Where an OCI runtime keeps its containers between commands: one directory per container under
--root (default /run/labctl-runtime, a tmpfs: containers do not survive a reboot, nor should their state).

    <root>/<id>/state.json   what `create` recorded: bundle, PID 1 and its start time, cgroup, annotations
    <root>/<id>/exec.fifo    exists from `create` until `start` (ociinit.py says why a FIFO)

Each command is a separate process (containerd's shim runs `create`, then `start`, then `state`...),
so everything they share is in these files, and every write is atomic (a temporary file, then
rename(2)): a reader sees the old state or the new, never half of one.

Two `create`s with one ID: mkdir(2) of <root>/<id> is atomic, so exactly one succeeds; the other gets
EEXIST and a clear error, before it has made anything.

The status (runtime.md): not stored but read from the kernel each time, as runc does:
    stopped   PID 1 is gone, or a zombie, or its PID now belongs to another process (start time differs)
    created   PID 1 lives and exec.fifo is still there: it waits in open(2) for `start`
    running   PID 1 lives and `start` has removed the FIFO
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

from labctl.errors import LabError

DEFAULT_ROOT = "/run/labctl-runtime"
OCI_VERSION = "1.0.2"
_ID = re.compile(r"[\w+.-]{1,1024}")


def check_id(container_id: str) -> None:
    if not _ID.fullmatch(container_id or "") or container_id in (".", ".."):
        raise LabError(f"invalid container ID {container_id!r}",
                       "use letters, digits and + . _ - (as runc), e.g. web-1")


def directory(root: str, container_id: str) -> Path:
    check_id(container_id)
    return Path(root) / container_id


def reserve(root: str, container_id: str) -> Path:
    """mkdir <root>/<id>: exactly one of two `create`s with one ID gets it (the lock)."""
    path = directory(root, container_id)
    Path(root).mkdir(mode=0o711, parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o711)
    except FileExistsError:
        raise LabError(f"container {container_id!r} already exists",
                       f"pick another ID, or `delete {container_id}` first") from None
    return path


def save(path: Path, data: dict) -> None:
    """state.json, atomically (a temporary file, fsync, rename)."""
    tmp = path / f".state.json.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path / "state.json")


def remove_dir(path: Path) -> None:
    """<root>/<id> and the files in it (state.json, exec.fifo), gone already or not."""
    for entry in path.iterdir() if path.is_dir() else []:
        entry.unlink()
    with contextlib.suppress(FileNotFoundError):
        path.rmdir()


def load(root: str, container_id: str) -> dict:
    path = directory(root, container_id)
    try:
        with open(path / "state.json") as f:
            data = json.load(f)
    except (FileNotFoundError, NotADirectoryError):
        raise LabError(f"container {container_id!r} does not exist",
                       f"`list` shows the containers under {root}") from None
    data["_dir"] = str(path)
    return data


def containers(root: str) -> list[dict]:
    found = []
    for entry in sorted(Path(root).iterdir()) if Path(root).is_dir() else []:
        try:
            found.append(load(root, entry.name))
        except LabError:
            continue   # a create under way (no state.json yet), or a stray directory
    return found


def process_start(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time, clock ticks since boot); None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def status(data: dict) -> str:
    """created | running | stopped, from the kernel (the module docstring)."""
    pid = data.get("pid") or 0
    if not pid or process_start(pid) != data.get("pid_start"):
        return "stopped"
    return "created" if os.path.exists(Path(data["_dir"]) / "exec.fifo") else "running"


def public(data: dict) -> dict:
    """The state JSON of runtime.md#state: what `state` prints and hooks read on stdin."""
    now = status(data) if data.get("pid") else data.get("status", "creating")
    out = {"ociVersion": OCI_VERSION, "id": data["id"], "status": now, "pid": data.get("pid", 0) if now != "stopped" else 0,
           "bundle": data["bundle"], "annotations": data.get("annotations") or {}}
    if data.get("created"):
        out["created"] = data["created"]
    return out


def for_hook(data: dict, status: str) -> dict:
    """The state a hook reads on stdin: the status the spec says it runs in (prestart "created",
    poststart "running", poststop "stopped"), not what the kernel says a moment later (a short-lived
    program may already have ended by the time poststart runs)."""
    return {"ociVersion": OCI_VERSION, "id": data["id"], "status": status, "pid": data.get("pid", 0),
            "bundle": data["bundle"], "annotations": data.get("annotations") or {}}
