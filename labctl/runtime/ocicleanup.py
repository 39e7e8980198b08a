"""What a crash of `labctl-runtime` leaves, and how `labctl cleanup` tells it from a container that lives.

Each command of the runtime is a short process; what outlives it is the container's state directory
(<root>/<id>, ocistate.py), its cgroup and PID 1. So `create` journals the directory (labctl/state.py)
as soon as mkdir(2) has reserved it, as it journals the cgroup, and `delete` drops both records. A record
still in the journal names one of:

  a live container   PID 1 lives (the PID *and* the start time state.json recorded: a recycled PID is
                     another process), or the `create` making it still runs (its PID and start time
                     too). Someone owns it: containerd's shim, a user who ran `create` and will `start`
                     it later. `labctl cleanup` keeps its records, as it keeps a running labctl
                     container's; `labctl cleanup --all` removes it too (PID 1 killed first)
  a leftover         PID 1 is gone and nobody ran `delete` (the shim was killed), or `create` was
                     killed before PID 1 was made or recorded: the cgroup goes (cgroup.kill, then
                     rmdir, with the levels of linux.cgroupsPath above it), then the directory

A create killed halfway leaves no PID 1 behind: PID 1 waits for GO on a pipe from `create`, reads EOF
when `create` dies and exits; and it was born in the cgroup, which the cgroup's own record removes.
The containers `labctl run --runtime labctl-oci` makes keep their --root inside labctl's container
directory, in the state directory: they live and die with that container (containers/cleanup.py).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

from labctl import state
from labctl.runtime import ocistate

KIND = "oci-container"


def record(root: str, container_id: str, path: Path, creator: list) -> str:
    """The journal record of <root>/<id>, written right after mkdir reserved it, with the PID and start
    time of the `create` making it (state.json has them too, once written); returns its path."""
    return str(state.record(KIND, remove, root=str(Path(root).resolve()), id=container_id, dir=str(path),
                            creator=creator).path)


def forget(data: dict) -> None:
    if data.get("journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(data["journal"])


def _load(directory: str) -> dict | None:
    try:
        with open(Path(directory) / "state.json") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None   # a create killed between mkdir and its first write, or a torn file
    data["_dir"] = directory
    return data


def pid1_alive(data: dict) -> bool:
    return bool(data.get("pid")) and ocistate.process_start(data["pid"]) == data.get("pid_start")


def is_alive(data: dict | None) -> bool:
    """The module docstring's "live container": PID 1 lives, or the `create` making it does."""
    if data is None:
        return False
    if pid1_alive(data):
        return True
    creator = data.get("creator") or [0, None]
    return not data.get("pid") and bool(creator[0]) and ocistate.process_start(creator[0]) == creator[1]


def live_containers() -> list[dict]:
    """The state of each live container with a record in the journal (its "journal" key: the record's
    path), but those inside labctl's own containers (their root is under the state directory)."""
    inside = str(state.state_dir().resolve()) + "/"
    found = []
    for rec in state.records():
        if rec.kind == KIND and not rec.data.get("root", "").startswith(inside):
            data = _load(rec.data["dir"]) or {"id": rec.data["id"], "pid": 0, "creator": rec.data.get("creator")}
            if is_alive(data):
                found.append(dict(data, journal=str(rec.path)))
    return found


def records_of(containers: list[dict]) -> set[str]:
    """The journal records `labctl cleanup` keeps for these containers: their own and their cgroups'."""
    return {path for data in containers for path in (data["journal"], (data.get("cgroup") or {}).get("journal"))
            if path}


def remove(root: str, id: str, dir: str, creator: list | None = None) -> None:   # noqa: A002 (the record's keys)
    """The journal's undo: PID 1 killed if it still lives (same PID and start time), the cgroup and the
    state directory removed. Tolerates each being gone already."""
    data = _load(dir) or {}
    if pid1_alive(data):
        with contextlib.suppress(ProcessLookupError):
            os.kill(data["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 5
        while pid1_alive(data) and time.monotonic() < deadline:   # not our child: it dies, its parent reaps
            time.sleep(0.01)
    if data.get("cgroup"):
        from labctl.runtime import ocicgroup
        ocicgroup.remove(data["cgroup"])
    ocistate.remove_dir(Path(dir))
