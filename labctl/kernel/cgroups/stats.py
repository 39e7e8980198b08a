"""What a cgroup has used, read from its files at one moment (Stats), and over time (Sampler)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

TYPE_CHECKING = False   # typing.TYPE_CHECKING, without importing typing on the `labctl run` path
if TYPE_CHECKING:
    from labctl.kernel.cgroups import Cgroup


@dataclass
class Stats:
    """One reading of a cgroup's counters. None: the controller is not there to say."""
    time: float = field(default_factory=time.monotonic)
    memory_bytes: int | None = None          # memory.current / memory.usage_in_bytes
    memory_peak_bytes: int | None = None     # memory.peak / memory.max_usage_in_bytes
    memory_limit_bytes: int | None = None    # memory.max / memory.limit_in_bytes (None: unlimited)
    memory_limit_hits: int | None = None     # memory.events "max" / memory.failcnt
    oom_kills: int | None = None             # memory.events "oom_kill" / memory.oom_control "oom_kill"
    cpu_usage_ns: int | None = None          # cpu.stat usage_usec * 1000 / cpuacct.usage
    cpu_periods: int | None = None           # cpu.stat nr_periods
    cpu_throttled_periods: int | None = None  # cpu.stat nr_throttled
    cpu_throttled_ns: int | None = None      # cpu.stat throttled_usec * 1000 / throttled_time
    cpu_quota: float | None = None           # cpu.max / cfs_quota_us ÷ cfs_period_us, in CPUs
    pids_current: int | None = None          # pids.current
    pids_max: int | None = None              # pids.max (None: "max")
    pids_refused: int | None = None          # pids.events "max": forks the limit refused
    processes: list[dict] = field(default_factory=list)  # per process, from psutil (Sampler only)


def cpu_rate(before: Stats, after: Stats) -> float:
    """CPUs used between two readings: CPU time consumed ÷ wall time elapsed."""
    return (after.cpu_usage_ns - before.cpu_usage_ns) / 1e9 / (after.time - before.time)


def process_details(pids: list[int]) -> list[dict]:
    """Per-process detail from psutil: name, resident memory, CPU seconds."""
    import psutil
    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            with p.oneshot():
                cpu = p.cpu_times()
                out.append({"pid": pid, "name": p.name(), "rss_bytes": p.memory_info().rss,
                            "cpu_seconds": cpu.user + cpu.system})
        except psutil.Error:
            continue
    return out


class Sampler:
    """Read a cgroup's Stats every `interval` seconds in a background thread.

        with Sampler(cgroup, interval=0.02) as sampler:
            ...                                   # let the workload run
        sampler.samples                           # [Stats, ...], oldest first
    """

    def __init__(self, cgroup: "Cgroup", interval: float = 0.05, per_process: bool = False):
        self.cgroup = cgroup
        self.interval = interval
        self.per_process = per_process
        import threading   # here, not at the top: `labctl run` and `ps` read stats, never sample them
        self.samples: list[Stats] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sampler-{cgroup.name}", daemon=True)

    def sample(self) -> Stats:
        stats = self.cgroup.stats()
        if self.per_process:
            stats.processes = process_details(self.cgroup.pids())
        self.samples.append(stats)
        return stats

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample()
            except OSError:
                pass  # the cgroup is being removed
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def stop(self) -> list[Stats]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return self.samples

    def __enter__(self) -> "Sampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # Series for plots: (seconds since the first sample, value)
    def seconds(self) -> list[float]:
        t0 = self.samples[0].time if self.samples else 0.0
        return [s.time - t0 for s in self.samples]

    def series(self, attribute: str) -> list:
        return [getattr(s, attribute) for s in self.samples]
