#!/usr/bin/env python3
"""Benchmark step 8's tracers: time to attach (bcc compile included), and the slowdown of workloads
with each tracer attached, measured side by side.

    sudo .venv/bin/python bench/tracing.py [--rounds 15]

Attach: each tracer is built (compiled, loaded, attached) and closed `--attach-runs` times; medians.
Slowdown: every tracer is compiled once; then, for each round, each condition runs in a shuffled
order — no tracer attached (baseline), or exactly one attached (bcc's attach/detach_tracepoint, no
recompilation) — and the ratio to that round's baseline is taken. Medians of those per-round ratios
are printed, so machine-wide noise (other jobs on the 2 cores) cancels out as much as it can.

Workloads: a syscall-heavy loop (dd bs=1: one read and one write per byte) and a fork+exec loop,
in the traced container; and the syscall loop on the host, outside the container, which shows what a
tracer costs the processes it does not watch (its scope test still runs on every event).

Each run is timed twice: wall-clock, and the CPU time (user + system) of the workload's processes
from wait4(2)'s rusage. CPU time is far less sensitive to other jobs competing for the cores, and a
tracer's cost is CPU time spent in the kernel on the workload's behalf.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labctl.tracing import KINDS, Scope, tracer_for  # noqa: E402
from labctl.tracing.buildtrace import BuildTracer  # noqa: E402
from labctl.demos.workload import ShellContainer  # noqa: E402
from labctl.kernel.syscalls import CLONE_NEWNS, CLONE_NEWPID, setns  # noqa: E402


def run_measured(argv: list[str], container_pid: int | None) -> tuple[float, float]:
    """Run argv (a busybox command) to completion; (wall seconds, CPU seconds of it and its children).
    With container_pid, the command runs inside that container: setns(2) into its PID and mount
    namespaces, then fork, so the process is in the container's PID namespace like any of its own."""
    start = time.perf_counter()
    child = os.fork()
    if child == 0:
        try:
            if container_pid:
                pidns = os.open(f"/proc/{container_pid}/ns/pid", os.O_RDONLY)
                mntns = os.open(f"/proc/{container_pid}/ns/mnt", os.O_RDONLY)
                setns(pidns, CLONE_NEWPID)
                setns(mntns, CLONE_NEWNS)
                os.chdir("/")
            inner = os.fork()
            if inner == 0:
                devnull = os.open("/dev/null", os.O_WRONLY)
                os.dup2(devnull, 2)   # dd's summary
                os.execv("/bin/busybox", ["busybox", *argv])
            _, status = os.waitpid(inner, 0)
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
        except BaseException:
            os._exit(127)
    _, status, usage = os.wait4(child, 0)
    if status != 0:
        raise RuntimeError(f"{argv} failed with status {status}")
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime

SYSCALL_LOOP = ["dd", "if=/dev/zero", "of=/dev/null", "bs=1", "count=200000"]   # 400 000 syscalls
EXEC_LOOP = ["sh", "-c", "i=0; while [ $i -lt 300 ]; do /bin/true; i=$((i+1)); done"]   # 300 fork+exec


def attach_times(runs: int) -> dict[str, float]:
    out = {}
    for kind in KINDS + ("build",):
        cls = BuildTracer if kind == "build" else tracer_for(kind)
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            tracer = cls()
            samples.append(time.perf_counter() - start)
            tracer.close()
        out[kind] = statistics.median(samples)
    return out


def set_attached(tracer, attached: bool) -> None:
    for tracepoint, function in tracer.TRACEPOINTS.items():
        if attached:
            tracer.bpf.attach_tracepoint(tp=tracepoint.encode(), fn_name=function.encode())
        else:
            tracer.bpf.detach_tracepoint(tracepoint.encode())


def slowdowns(rounds: int) -> dict[str, dict[str, tuple[float, float, float, float]]]:
    """{workload: {condition: (median wall s, median wall ratio, median CPU s, median CPU ratio)}}."""
    with ShellContainer("lab-bench8") as box:
        scope = Scope.of_pid(box.pid)
        workloads = {"syscall loop in the container": (SYSCALL_LOOP, box.pid),
                     "fork+exec loop in the container": (EXEC_LOOP, box.pid),
                     "syscall loop on the host (not traced)": (SYSCALL_LOOP, None)}
        tracers = {kind: tracer_for(kind)(scope) for kind in KINDS}
        try:
            for tracer in tracers.values():
                set_attached(tracer, False)
            results = {}
            for workload, (argv, where) in workloads.items():
                run_measured(argv, where)   # warm up
                wall = {c: [] for c in ("none",) + KINDS}
                cpu = {c: [] for c in ("none",) + KINDS}
                wall_ratio = {c: [] for c in ("none",) + KINDS}
                cpu_ratio = {c: [] for c in ("none",) + KINDS}
                for _ in range(rounds):
                    order = ["none", *KINDS]
                    random.shuffle(order)
                    this_round = {}
                    for condition in order:
                        if condition != "none":
                            set_attached(tracers[condition], True)
                        try:
                            this_round[condition] = run_measured(argv, where)
                        finally:
                            if condition != "none":
                                set_attached(tracers[condition], False)
                        if condition not in ("none", "syscalls"):
                            tracers[condition].drain(0)   # outside the timed region
                    base_wall, base_cpu = this_round["none"]
                    for c, (w, u) in this_round.items():
                        wall[c].append(w)
                        cpu[c].append(u)
                        wall_ratio[c].append(w / base_wall)
                        cpu_ratio[c].append(u / base_cpu if base_cpu else 1.0)
                med = statistics.median
                results[workload] = {c: (med(wall[c]), med(wall_ratio[c]), med(cpu[c]), med(cpu_ratio[c]))
                                     for c in wall}
            return results
        finally:
            for tracer in tracers.values():
                tracer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--attach-runs", type=int, default=5)
    args = parser.parse_args()
    print(f"attach (compile + load + attach), median of {args.attach_runs}:")
    for kind, seconds in attach_times(args.attach_runs).items():
        print(f"  {kind:<9} {seconds * 1000:7.0f} ms")
    print(f"\nslowdown with one tracer attached, {args.rounds} interleaved rounds "
          "(medians; ratios are medians of per-round ratios to no tracer):")
    for workload, rows in slowdowns(args.rounds).items():
        print(f"  {workload}:")
        print(f"    {'tracer':<9} {'wall':>9} {'ratio':>7}   {'CPU':>9} {'ratio':>7}")
        for condition, (wall, wall_ratio, cpu, cpu_ratio) in rows.items():
            print(f"    {condition:<9} {wall * 1000:7.1f}ms {wall_ratio:6.3f}x   {cpu * 1000:7.1f}ms {cpu_ratio:6.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
