"""The cgroup v2 backend: one unified tree; a controller works in a cgroup once its parent's
cgroup.subtree_control enables it (hierarchy.ensure_lab_dir does that for the lab's node).

| what              | file (all in the one directory)                                      |
|-------------------|----------------------------------------------------------------------|
| memory limit      | memory.max; swap: memory.swap.max (swap alone, not memory + swap)     |
| memory used       | memory.current, memory.peak                                          |
| limit hits, OOM   | memory.events: `max N`, `oom N`, `oom_kill N`                        |
| CPU quota         | cpu.max: `QUOTA PERIOD` (µs) or `max PERIOD`; weight: cpu.weight      |
| CPU used          | cpu.stat: usage_usec, nr_periods, nr_throttled, throttled_usec       |
| processes         | pids.max, pids.current, pids.events `max N`                          |
| disk I/O          | io.max: `MAJ:MIN rbps=N wbps=N riops=N wiops=N`                      |
| kill everything   | cgroup.kill: write 1 (Linux 5.14+)                                   |
"""
from __future__ import annotations

from pathlib import Path

from labctl.kernel.cgroups.limits import Limits, shares_to_weight
from labctl.kernel.cgroups.stats import Stats
from labctl.kernel.cgroups.v1 import _int, _keyed, set_file
from labctl.errors import LabError


def apply(directory: Path, controllers: set[str], limits: Limits) -> None:
    """Write the limits for `controllers` (those of the limits that live on v2) into the cgroup."""
    if "memory" in controllers and limits.memory_bytes is not None:
        set_file(directory, "memory.max", limits.memory_bytes)
        swap = limits.memory_swap_bytes
        if (directory / "memory.swap.max").exists():
            set_file(directory, "memory.swap.max",
                     0 if swap is None else "max" if swap == -1 else swap - limits.memory_bytes)
        elif swap is not None:
            raise LabError("--memory-swap needs swap accounting, and this kernel has none (no memory.swap.max)",
                           "leave out --memory-swap, or use a kernel built with CONFIG_MEMCG_SWAP")
    if "cpu" in controllers:
        if limits.cpus is not None:
            set_file(directory, "cpu.max", f"{limits.cpu_quota_us} {limits.cpu_period_us}")
        if limits.cpu_shares is not None:
            set_file(directory, "cpu.weight", shares_to_weight(limits.cpu_shares))
    if "pids" in controllers and limits.pids_max is not None:
        set_file(directory, "pids.max", limits.pids_max)
    if "io" in controllers:
        for device, values in limits.io.items():
            set_file(directory, "io.max", device + " " + " ".join(f"{k}={v}" for k, v in values.items()))


def read(directory: Path, controllers: set[str], stats: Stats) -> None:
    """Fill `stats` from the v2 files of `controllers` in the cgroup (cpu.stat's usage is always there)."""
    if "memory" in controllers:
        stats.memory_bytes = _int(directory / "memory.current")
        stats.memory_peak_bytes = _int(directory / "memory.peak")
        stats.memory_limit_bytes = _int(directory / "memory.max")  # "max": None
        events = _keyed(directory / "memory.events")
        stats.memory_limit_hits = events.get("max")
        stats.oom_kills = events.get("oom_kill")
    if "cpuacct" in controllers or "cpu" in controllers:
        cpu_stat = _keyed(directory / "cpu.stat")
        if "usage_usec" in cpu_stat:
            stats.cpu_usage_ns = cpu_stat["usage_usec"] * 1000
        if "cpu" in controllers:
            stats.cpu_periods = cpu_stat.get("nr_periods")
            stats.cpu_throttled_periods = cpu_stat.get("nr_throttled")
            if "throttled_usec" in cpu_stat:
                stats.cpu_throttled_ns = cpu_stat["throttled_usec"] * 1000
            try:
                quota, period = (directory / "cpu.max").read_text().split()
                stats.cpu_quota = None if quota == "max" else int(quota) / int(period)
            except (OSError, ValueError):
                pass
    if "pids" in controllers:
        stats.pids_current = _int(directory / "pids.current")
        stats.pids_max = _int(directory / "pids.max")
        stats.pids_refused = _keyed(directory / "pids.events").get("max")
