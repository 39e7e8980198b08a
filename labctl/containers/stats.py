"""`labctl stats`: the running containers' CPU, memory and process counts, read from their cgroups.

CPU % is (cpuacct.usage or cpu.stat usage_usec) consumed between two readings ÷ the wall time between
them, as `docker stats` computes it (100% = one CPU). Memory is memory.usage_in_bytes / memory.current
against the limit; PIDS is pids.current.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from labctl.containers import resources, store


@dataclass
class Sample:
    """One container at one moment: what stats and the plot show."""
    name: str
    time: float
    cpu_ns: int | None
    memory_bytes: int | None
    memory_limit_bytes: int | None
    pids: int | None
    cpu_quota: float | None


def sample(container: store.Container) -> Sample | None:
    stats = resources.read_stats(container.state.get("cgroup"))
    if stats is None:
        return None
    return Sample(container.name, time.monotonic(), stats.cpu_usage_ns, stats.memory_bytes,
                  stats.memory_limit_bytes, stats.pids_current, stats.cpu_quota)


def cpu_percent(before: Sample, after: Sample) -> float | None:
    if before.cpu_ns is None or after.cpu_ns is None or after.time <= before.time:
        return None
    return 100.0 * (after.cpu_ns - before.cpu_ns) / 1e9 / (after.time - before.time)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f}{unit}" if unit != "B" else f"{n}B"
        n /= 1024
    return str(n)


def _select(names: list[str]) -> list[store.Container]:
    if names:
        return [store.find(n) for n in names]
    return [c for c in store.all_containers() if c.status == "running"]


def table(pairs: list[tuple[store.Container, Sample | None, Sample | None]]) -> str:
    rows = [("CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS")]
    for c, before, after in pairs:
        if after is None:
            rows.append((c.short_id, c.name, "-", "-", "-", "-"))
            continue
        cpu = cpu_percent(before, after) if before else None
        limit = after.memory_limit_bytes
        mem_pct = f"{100 * after.memory_bytes / limit:.2f}%" if limit and after.memory_bytes is not None else "-"
        rows.append((c.short_id, c.name, f"{cpu:.2f}%" if cpu is not None else "-",
                     f"{_size(after.memory_bytes)} / {_size(limit) if limit else 'unlimited'}", mem_pct,
                     str(after.pids) if after.pids is not None else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


def main(names: list[str], stream: bool = True, interval: float = 1.0) -> int:
    containers = _select(names)
    previous = {c.id: sample(c) for c in containers}
    try:
        while True:
            time.sleep(interval if stream else 0.5)
            containers = _select(names) if not names else containers
            current = {c.id: sample(c) for c in containers}
            text = table([(c, previous.get(c.id), current.get(c.id)) for c in containers])
            if stream and sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")   # clear the screen, like docker stats
            print(text, flush=True)
            if not stream:
                return 0
            previous = current
    except KeyboardInterrupt:
        return 0


#: name -> (workload, limits): what measure_workloads() runs side by side.
WORKLOADS = {
    "spin-half-cpu": (["sh", "-c", "while :; do :; done"], {"cpus": 0.5}),
    "spin-one-cpu": (["sh", "-c", "while :; do :; done"], {"cpus": 1.0}),
    "fill-32m": (["sh", "-c", "for i in $(seq 1 28); do dd if=/dev/zero of=/fill/$i bs=1M count=1 2>/dev/null; "
                  "sleep 0.1; done; sleep 600"], {"memory": "32m", "tmpfs": ["/fill"]}),
    "idle": (["sleep", "600"], {"memory": "16m"}),
}


def measure_workloads(seconds: float = 4.0, interval: float = 0.2, image: str = "busybox",
                      workloads: dict | None = None) -> dict:
    """Run each workload in a detached container under its limits, sample every container's cgroup every
    `interval` seconds, then remove them. Returns {name: {"limits", "t", "cpu_percent", "memory_bytes"}}."""
    from labctl.containers import lifecycle
    workloads = workloads or WORKLOADS
    started = []
    try:
        for name, (argv, limits) in workloads.items():
            spec, img = lifecycle.build_spec(image, argv, name=f"stats-{name}-{time.monotonic_ns() % 100000}",
                                             detach=True, memory=limits.get("memory"), cpus=limits.get("cpus"),
                                             tmpfs=limits.get("tmpfs", []))
            container, _ = lifecycle.run(spec, img)
            started.append((name, container, limits))
        series = {name: {"limits": limits, "t": [], "cpu_percent": [], "memory_bytes": []}
                  for name, _, limits in started}
        previous = {name: sample(c) for name, c, _ in started}
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            time.sleep(interval)
            for name, c, _ in started:
                now = sample(c)
                if now is None or previous[name] is None:
                    continue
                s = series[name]
                s["t"].append(now.time - t0)
                s["cpu_percent"].append(cpu_percent(previous[name], now) or 0.0)
                s["memory_bytes"].append(now.memory_bytes or 0)
                previous[name] = now
        return series
    finally:
        for _, c, _ in started:
            lifecycle.remove(store.load(c.id), force=True)
