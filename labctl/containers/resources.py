"""The container's cgroup (step 3), through labctl.kernel.cgroups: the one integration point with that module.

Docker's flags map onto cgroup files there (-m -> memory.limit_in_bytes / memory.max, --cpus -> the
CFS quota, --pids-limit -> pids.max). The container gets a cgroup even without limits, as runc gives
one, so `stats` can account for it and `exec` can join it. What is stored in the container's record is
enough for another process (the supervisor, `labctl stats`) to find the cgroup again.
"""
from __future__ import annotations

import errno
import os

from labctl.containers.spec import Limits


def create(name: str, limits: Limits) -> dict:
    """Create (journaled by labctl.kernel.cgroups) the cgroup and write the limits; returns what to store."""
    from labctl.kernel import cgroups
    cg = cgroups.Cgroup.create(name, cgroups.parse_limits(
        memory=limits.memory_bytes, cpus=limits.cpus, pids_limit=limits.pids))
    return {"name": name, "dirs": {str(k): str(v) for k, v in cg.dirs.items()},
            "hierarchies": [cgroups.describe_hierarchy(h) for h in cg.layout.hierarchies() if h.mountpoint in cg.dirs],
            "journal": str(cg.record.path) if cg.record else None}


def _dirs(info: dict | None, version: int) -> list[str]:
    if not info:
        return []
    return [info["dirs"][h["mountpoint"]] for h in info["hierarchies"]
            if h["version"] == version and h["mountpoint"] in info["dirs"]]


def fork_into(info: dict | None) -> int:
    """os.fork() for a process that belongs in the container's cgroup (PID 1, or one `exec` starts):
    the child is born in the cgroup's v2 directory, if it has one, by clone3(CLONE_INTO_CGROUP), and
    must then call join_self() before anything else. Neither step waits for the RCU grace period that
    writing a PID into cgroup.procs costs (10-20 ms, see syscalls.fork_into_cgroup)."""
    global _born_in_v2
    v2 = _dirs(info, 2)
    _born_in_v2 = False
    if not v2:
        return os.fork()
    from labctl.errors import LabError
    from labctl.kernel.syscalls import fork_into_cgroup
    try:
        fd = os.open(v2[0], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise LabError(f"the container's cgroup {v2[0]} cannot be opened ({exc.strerror})",
                       "is the container still running? `labctl ps -a`") from None
    try:
        _born_in_v2 = True   # what the child sees (it is a copy of us at the clone)
        return fork_into_cgroup(fd)
    except OSError as exc:
        _born_in_v2 = False
        if exc.errno in (errno.ENOSYS, errno.EPERM):
            # clone3 refused: a seccomp profile that blocks it (a container of containers) or a kernel
            # before 5.7. Fall back to fork(); the child joins v2 in join_self(), the slow way.
            return os.fork()
        raise LabError(f"could not start a process in the container's cgroup {v2[0]}: {exc.strerror}",
                       "is the container still running? `labctl ps -a`; `labctl doctor` checks cgroups") from None
    finally:
        os.close(fd)


_born_in_v2 = False


def join_self(info: dict | None) -> None:
    """In the child of fork_into(): move into the container's cgroup in every v1 hierarchy ("0" into
    `tasks`), and into v2 if clone3 could not place us there at birth.

    "0" into `tasks` moves the calling thread, which for a single-threaded process (a fresh fork) is
    the whole process. Unlike a write into cgroup.procs it does not take the global
    cgroup_threadgroup_rwsem for writing, so it does not wait for an RCU grace period
    (kernel/cgroup/cgroup.c, cgroup_procs_write_start)."""
    files = [f"{d}/tasks" for d in _dirs(info, 1)]
    if not _born_in_v2:
        files += [f"{d}/cgroup.procs" for d in _dirs(info, 2)]
    for path in files:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)


def remove(info: dict | None) -> None:
    """Kill whatever is left in the cgroup, rmdir it, drop its journal record (tolerates it being gone)."""
    if not info:
        return
    from labctl.kernel import cgroups
    cgroups.remove_cgroup(info["name"], info["hierarchies"])
    if info.get("journal"):
        try:
            os.unlink(info["journal"])
        except FileNotFoundError:
            pass


def open_cgroup(info: dict):
    from pathlib import Path
    from labctl.kernel import cgroups
    return cgroups.Cgroup(info["name"], cgroups.detect(), {Path(k): Path(v) for k, v in info["dirs"].items()})


def read_stats(info: dict | None):
    """A cgroups.Stats reading (memory, CPU time, pids), or None if the container has no cgroup now."""
    if not info:
        return None
    return open_cgroup(info).stats()
