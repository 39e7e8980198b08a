"""The three experiments of step 3, shared by `labctl step 3`, the notebook and the tests.

Each starts a workload in a fresh lab cgroup, samples the cgroup's files while it runs, and returns
what the kernel reported. The workloads run in the lab's busybox container (step 1's namespaces plus
step 2's root filesystem), except the fork bomb, which is a Python program and so runs with the
host's files, still in a PID namespace of its own.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

from labctl.kernel.cgroups import Cgroup, Sampler, Stats, cpu_rate, detect, parse_limits
from labctl.kernel.cgroups.limits import parse_bytes

#: Allocates 1 MiB strings into an awk array, pausing 20 ms every 2 MiB: ~80 MiB a second.
MEMORY_HOG = ["awk", 'BEGIN { while (1) { a[i++] = sprintf("%1048576s", ""); if (i % 2 == 0) system("usleep 20000") } }']
#: Two busy loops, so that even a 1-CPU quota is a limit.
BUSY_LOOPS = ["sh", "-c", "while :; do :; done & while :; do :; done"]
#: Every process forks forever; a refused fork (EAGAIN) is retried 10 ms later. (A shell's
#: `f(){ f|f& };f` dies out under pids.max instead: the shell exits when fork fails.)
FORK_BOMB = [sys.executable, "-c",
             "import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)"]


def _container_setup():
    from labctl.images import labimage
    from labctl.kernel import rootfs
    root = labimage.ensure_busybox_rootfs()
    return lambda: rootfs.setup_container_root(root)


def start_in_container(cgroup: Cgroup, argv: list[str], busybox: bool = True, quiet: bool = True):
    """PID 1 of a new container (uts, pid, ipc, mnt namespaces), put in the cgroup before it execs."""
    null = os.open("/dev/null", os.O_RDWR) if quiet else None
    try:
        return cgroup.spawn(argv, hostname="lab-cgroups", setup=_container_setup() if busybox else None,
                            stdin=null, stdout=null, stderr=null, what=f"step 3 {cgroup.name}")
    finally:
        if null is not None:
            os.close(null)


@dataclass
class MemoryRun:
    limit_bytes: int
    samples: list[Stats]
    exit_status: int            # -9: killed by SIGKILL, the OOM killer's signal
    oom_kills: int              # memory.events oom_kill / memory.oom_control oom_kill
    peak_bytes: int | None
    seconds: float


def memory_until_oom(limit: str | int = "64m", name: str = "lab-oom", interval: float = 0.01,
                     timeout: float = 60.0) -> MemoryRun:
    """Allocate steadily under a memory limit until the kernel's OOM killer ends the process."""
    limit_bytes = parse_bytes(limit)
    with Cgroup.create(name, parse_limits(memory=limit_bytes)) as cg:
        with Sampler(cg, interval) as sampler:
            started = time.monotonic()
            proc = start_in_container(cg, MEMORY_HOG)
            status = proc.wait(timeout=timeout)
            elapsed = time.monotonic() - started
            time.sleep(interval * 2)
        final = cg.stats()
    return MemoryRun(limit_bytes, sampler.samples, status, final.oom_kills or 0, final.memory_peak_bytes, elapsed)


@dataclass
class CpuRun:
    quota: float
    samples: list[Stats]
    usage_cpus: float           # CPU time used ÷ wall time over the measured window
    periods: int
    throttled_periods: int
    throttled_seconds: float


@contextlib.contextmanager
def favour_lab_node(cg: Cgroup):
    """Give the lab's `labctl/` node the highest CPU weight (v1 cpu.shares 262144, v2 cpu.weight 10000)
    among its siblings for the duration, so a quota is measured against the quota, not against whatever
    else the machine runs. Only the lab's own node changes, and its weight is put back afterwards."""
    from labctl.kernel.cgroups.hierarchy import write
    directory = cg.path("cpu")
    name, value = ("cpu.shares", 262144) if cg.version("cpu") == 1 else ("cpu.weight", 10000)
    file = directory.parent / name if directory is not None else None
    if file is None or not file.exists():
        yield
        return
    old = file.read_text().strip()
    write(file, value)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            write(file, old)


def cpu_under_quota(quota: float, seconds: float = 1.0, name: str = "lab-cpu", interval: float = 0.1,
                    warmup: float = 0.2) -> CpuRun:
    """Run two busy loops under `--cpus quota` and measure what they got."""
    with Cgroup.create(name, parse_limits(cpus=quota)) as cg, favour_lab_node(cg):
        proc = start_in_container(cg, BUSY_LOOPS)
        try:
            time.sleep(warmup)
            with Sampler(cg, interval) as sampler:
                time.sleep(seconds)
        finally:
            proc.kill()
    first, last = sampler.samples[0], sampler.samples[-1]
    return CpuRun(quota, sampler.samples, cpu_rate(first, last),
                  (last.cpu_periods or 0) - (first.cpu_periods or 0),
                  (last.cpu_throttled_periods or 0) - (first.cpu_throttled_periods or 0),
                  ((last.cpu_throttled_ns or 0) - (first.cpu_throttled_ns or 0)) / 1e9)


@dataclass
class PidsRun:
    pids_max: int
    samples: list[Stats]
    max_seen: int               # the highest pids.current sampled
    refused: int                # pids.events max: forks the limit refused
    host_fork_ms_before: float  # median time for the host to fork+exec /bin/true, before the bomb...
    host_fork_ms_during: float  # ...and while it runs
    host_fork_samples: list[float] = field(default_factory=list)


def _host_fork_ms(count: int = 10) -> list[float]:
    times = []
    for _ in range(count):
        t = time.perf_counter()
        subprocess.run(["/bin/true"])
        times.append((time.perf_counter() - t) * 1000)
    return times


def fork_bomb(pids_max: int = 32, seconds: float = 1.0, name: str = "lab-bomb", interval: float = 0.02) -> PidsRun:
    """A fork bomb under pids.max: the count stays at the limit; the host keeps answering.
    The bomb also gets 1 CPU (--cpus 1), where the cpu controller is there, so that it cannot starve the
    other users of this machine."""
    import statistics
    before = _host_fork_ms()
    cpus = 1 if detect().can_limit("cpu") else None
    with Cgroup.create(name, parse_limits(pids_limit=pids_max, cpus=cpus)) as cg:
        proc = start_in_container(cg, FORK_BOMB, busybox=False)
        try:
            with Sampler(cg, interval) as sampler:
                deadline = time.monotonic() + 20  # the bomb's interpreter starts slowly under emulation
                while not (sampler.samples and sampler.samples[-1].pids_refused) and time.monotonic() < deadline:
                    time.sleep(interval)
                time.sleep(seconds / 2)
                during = _host_fork_ms()
                time.sleep(seconds / 2)
        finally:
            cg.kill_all()
            proc.wait(timeout=10)
        final = cg.stats()
    seen = [s.pids_current for s in sampler.samples if s.pids_current is not None]
    return PidsRun(pids_max, sampler.samples, max(seen, default=0), final.pids_refused or 0,
                   statistics.median(before), statistics.median(during), during)
