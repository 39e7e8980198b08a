"""The container's cgroup (step 3), through labctl.cgroups: the one integration point with that module.

Docker's flags map onto cgroup files there (-m -> memory.limit_in_bytes / memory.max, --cpus -> the
CFS quota, --pids-limit -> pids.max). The container gets a cgroup even without limits, as runc gives
one, so `stats` can account for it and `exec` can join it. What is stored in the container's record is
enough for another process (the supervisor, `labctl stats`) to find the cgroup again.
"""
from __future__ import annotations

from labctl.container.spec import Limits


def available() -> bool:
    try:
        import labctl.cgroups  # noqa: F401
    except ImportError:
        return False
    return True


def create(name: str, limits: Limits) -> dict | None:
    """Create (journaled) the cgroup and write the limits; returns what to store to find it again."""
    if not available():
        return None
    from labctl import cgroups
    cg = cgroups.create(name, cgroups.parse_limits(memory=limits.memory_bytes, cpus=limits.cpus,
                                                   pids=limits.pids))
    return cg.to_json()


def procs_files(info: dict | None) -> list[str]:
    """The cgroup.procs files PID 1 writes "0" to, to join the cgroup (one per v1 hierarchy)."""
    if not info:
        return []
    from labctl import cgroups
    return [str(p) for p in cgroups.Cgroup.from_json(info).procs_files()]


def remove(info: dict | None) -> None:
    """Kill whatever is left in the cgroup and remove it (tolerates it being gone)."""
    if not info:
        return
    from labctl import cgroups
    cgroups.Cgroup.from_json(info).remove()


def read_stats(info: dict | None):
    if not info:
        return None
    from labctl import cgroups
    return cgroups.Cgroup.from_json(info).stats()
