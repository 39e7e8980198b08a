"""The container's cgroup (step 3), through labctl.kernel.cgroups: the one integration point with that module.

Docker's flags map onto cgroup files there (-m -> memory.limit_in_bytes / memory.max, --cpus -> the
CFS quota, --pids-limit -> pids.max). The container gets a cgroup even without limits, as runc gives
one, so `stats` can account for it and `exec` can join it. What is stored in the container's record is
enough for another process (the supervisor, `labctl stats`) to find the cgroup again, and for the runtime
to start PID 1 and exec'd processes in it (labctl/runtime/cgroup.py).

Step 9 adds the device allowlist (labctl/security/devices.py), written into the new cgroup before PID 1
is forked into it: the v1 devices controller's list and, where the container has a cgroup2 directory,
the BPF device program attached to it. Both go when the cgroup's directories are removed.
"""
from __future__ import annotations

import os

TYPE_CHECKING = False   # typing.TYPE_CHECKING, without importing typing on the `labctl run` path
if TYPE_CHECKING:
    from labctl.kernel.cgroups.limits import Limits


def cgroup_name(short_id: str) -> str:
    """labctl-<ID>, or labctl-hostN-<ID> in a cluster host's daemon (step 13: $LABCTL_CGROUP_PREFIX, set by
    labctl/cluster/hosts.py): the hosts share the machine's cgroup tree, and each one's cgroups say whose."""
    return f"labctl-{os.environ.get('LABCTL_CGROUP_PREFIX', '')}{short_id}"


def create(name: str, limits: Limits, privileged: bool = False) -> dict:
    """Create (journaled by labctl.kernel.cgroups) the cgroup, write the limits and the device allowlist
    (step 9: before any process is in it, so PID 1 never runs without it); returns what to store."""
    from labctl.kernel import cgroups
    from labctl.security import devices
    cg = cgroups.Cgroup.create(name, limits)
    try:
        unified = cg.layout.unified
        allowlist = devices.apply(cg.path("devices"), cg.dirs.get(unified.mountpoint) if unified else None,
                                  privileged)
    except BaseException:
        cg.remove()
        raise
    return {"name": name, "dirs": {str(k): str(v) for k, v in cg.dirs.items()},
            "hierarchies": [cgroups.describe_hierarchy(h) for h in cg.layout.hierarchies() if h.mountpoint in cg.dirs],
            "journal": str(cg.record.path) if cg.record else None, "devices": allowlist}


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


def oci_resources(limits: Limits) -> dict:
    """config.json's linux.resources for the limits (-m, --cpus, --cpu-shares, --pids-limit)."""
    out: dict = {}
    if limits.memory_bytes is not None:
        out["memory"] = {"limit": limits.memory_bytes, "swap": limits.memory_swap_bytes or limits.memory_bytes}
    if limits.cpu_quota_us is not None:
        out["cpu"] = {"quota": limits.cpu_quota_us, "period": limits.cpu_period_us}
    if limits.cpu_shares is not None:
        out.setdefault("cpu", {})["shares"] = limits.cpu_shares
    if limits.pids_max is not None:
        out["pids"] = {"limit": limits.pids_max}
    return out
