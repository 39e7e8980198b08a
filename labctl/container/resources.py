"""The container's cgroup (step 3), through labctl.cgroups: the one integration point with that module.

Docker's flags map onto cgroup files there (-m -> memory.limit_in_bytes / memory.max, --cpus -> the
CFS quota, --pids-limit -> pids.max). The container gets a cgroup even without limits, as runc gives
one, so `stats` can account for it and `exec` can join it. What is stored in the container's record is
enough for another process (the supervisor, `labctl stats`) to find the cgroup again.
"""
from __future__ import annotations

import os

from labctl.container.spec import Limits


def create(name: str, limits: Limits) -> dict:
    """Create (journaled by labctl.cgroups) the cgroup and write the limits; returns what to store."""
    from labctl import cgroups
    cg = cgroups.Cgroup.create(name, cgroups.parse_limits(
        memory=limits.memory_bytes, cpus=limits.cpus, pids_limit=limits.pids))
    return {"name": name, "dirs": {str(k): str(v) for k, v in cg.dirs.items()},
            "hierarchies": [cgroups.describe_hierarchy(h) for h in cg.layout.hierarchies() if h.mountpoint in cg.dirs],
            "journal": str(cg.record.path) if cg.record else None}


def procs_files(info: dict | None) -> list[str]:
    """The cgroup.procs files PID 1 writes "0" to, to join the cgroup (one per hierarchy)."""
    if not info:
        return []
    return [f"{d}/cgroup.procs" for d in info["dirs"].values()]


def remove(info: dict | None) -> None:
    """Kill whatever is left in the cgroup, rmdir it, drop its journal record (tolerates it being gone)."""
    if not info:
        return
    from labctl import cgroups
    cgroups.remove_cgroup(info["name"], info["hierarchies"])
    if info.get("journal"):
        try:
            os.unlink(info["journal"])
        except FileNotFoundError:
            pass


def open_cgroup(info: dict):
    from pathlib import Path
    from labctl import cgroups
    return cgroups.Cgroup(info["name"], cgroups.detect(), {Path(k): Path(v) for k, v in info["dirs"].items()})


def read_stats(info: dict | None):
    """A cgroups.Stats reading (memory, CPU time, pids), or None if the container has no cgroup now."""
    if not info:
        return None
    return open_cgroup(info).stats()
