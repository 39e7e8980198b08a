"""The cgroup v1 backend: one hierarchy per controller (or a few co-mounted, like cpu,cpuacct).

| what              | file (in the controller's own hierarchy)                                  |
|-------------------|---------------------------------------------------------------------------|
| memory limit      | memory.limit_in_bytes; with swap accounting, memory.memsw.limit_in_bytes   |
| memory used       | memory.usage_in_bytes, memory.max_usage_in_bytes, memory.failcnt           |
| OOM kills         | memory.oom_control: `oom_kill N`                                           |
| CPU quota         | cpu.cfs_quota_us out of every cpu.cfs_period_us; weight: cpu.shares        |
| CPU used          | cpuacct.usage (ns); throttling: cpu.stat nr_periods, nr_throttled, throttled_time |
| processes         | pids.max, pids.current, pids.events `max N`                                |
| disk I/O          | blkio.throttle.{read,write}_{bps,iops}_device: `MAJ:MIN value`             |
"""
from __future__ import annotations

from pathlib import Path

from labctl.kernel.cgroups.hierarchy import write
from labctl.kernel.cgroups.limits import Limits
from labctl.kernel.cgroups.stats import Stats
from labctl.errors import LabError

UNLIMITED = 1 << 62  # v1 shows "no limit" as a page-rounded LONG_MAX: anything this big


def set_file(directory: Path, name: str, value) -> None:
    try:
        write(directory / name, value)
    except OSError as exc:
        raise LabError(f"the kernel refused {value!r} in {directory / name}: {exc.strerror}",
                       "check the value; `labctl cgroup info` shows what this host supports") from None


def apply(dirs: dict[str, Path], limits: Limits) -> None:
    """Write the limits into the v1 hierarchies in `dirs` (controller -> this cgroup's directory)."""
    if "memory" in dirs and limits.memory_bytes is not None:
        memory = dirs["memory"]
        set_file(memory, "memory.limit_in_bytes", limits.memory_bytes)  # first: memsw may not go below it
        memsw = memory / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            swap = limits.memory_swap_bytes
            set_file(memory, memsw.name, limits.memory_bytes if swap is None else swap)
        elif limits.memory_swap_bytes is not None:
            raise LabError("--memory-swap needs swap accounting, and this kernel has none "
                           "(no memory.memsw.limit_in_bytes)", "boot with swapaccount=1, or leave out --memory-swap")
    if "cpu" in dirs:
        cpu = dirs["cpu"]
        if limits.cpus is not None:
            set_file(cpu, "cpu.cfs_period_us", limits.cpu_period_us)
            set_file(cpu, "cpu.cfs_quota_us", limits.cpu_quota_us)
        if limits.cpu_shares is not None:
            set_file(cpu, "cpu.shares", limits.cpu_shares)
    if "pids" in dirs and limits.pids_max is not None:
        set_file(dirs["pids"], "pids.max", limits.pids_max)
    if "io" in dirs:
        names = {"rbps": "read_bps", "wbps": "write_bps", "riops": "read_iops", "wiops": "write_iops"}
        for device, values in limits.io.items():
            for key, value in values.items():
                set_file(dirs["io"], f"blkio.throttle.{names[key]}_device", f"{device} {value}")


def _int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _keyed(path: Path) -> dict[str, int]:
    try:
        return {k: int(v) for k, v in (line.split()[:2] for line in path.read_text().splitlines() if line)}
    except (OSError, ValueError):
        return {}


def read(dirs: dict[str, Path], stats: Stats) -> None:
    """Fill `stats` from the v1 files of the controllers in `dirs`."""
    if "memory" in dirs:
        m = dirs["memory"]
        stats.memory_bytes = _int(m / "memory.usage_in_bytes")
        stats.memory_peak_bytes = _int(m / "memory.max_usage_in_bytes")
        limit = _int(m / "memory.limit_in_bytes")
        stats.memory_limit_bytes = None if limit is None or limit >= UNLIMITED else limit
        stats.memory_limit_hits = _int(m / "memory.failcnt")
        stats.oom_kills = _keyed(m / "memory.oom_control").get("oom_kill")
    if "cpuacct" in dirs:
        stats.cpu_usage_ns = _int(dirs["cpuacct"] / "cpuacct.usage")
    if "cpu" in dirs:
        c = dirs["cpu"]
        cpu_stat = _keyed(c / "cpu.stat")
        stats.cpu_periods = cpu_stat.get("nr_periods")
        stats.cpu_throttled_periods = cpu_stat.get("nr_throttled")
        stats.cpu_throttled_ns = cpu_stat.get("throttled_time")
        quota, period = _int(c / "cpu.cfs_quota_us"), _int(c / "cpu.cfs_period_us")
        stats.cpu_quota = quota / period if quota and quota > 0 and period else None
    if "pids" in dirs:
        p = dirs["pids"]
        stats.pids_current = _int(p / "pids.current")
        stats.pids_max = _int(p / "pids.max")  # "max" does not parse: None
        stats.pids_refused = _keyed(p / "pids.events").get("max")
