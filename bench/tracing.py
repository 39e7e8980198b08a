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
"""
from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labctl.tracing import Scope, tracer_for  # noqa: E402
from labctl.tracing.buildtrace import BuildTracer  # noqa: E402
from labctl.tracing.workload import ShellContainer  # noqa: E402

KINDS = ("exec", "open", "syscalls", "net", "oom")
SYSCALL_LOOP = "dd if=/dev/zero of=/dev/null bs=1 count=200000 2>/dev/null"  # 400 000 syscalls
EXEC_LOOP = "i=0; while [ $i -lt 300 ]; do /bin/true; i=$((i+1)); done"      # 300 fork+exec


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


def slowdowns(rounds: int) -> dict[str, dict[str, tuple[float, float]]]:
    workloads = {"syscall loop in the container": None, "fork+exec loop in the container": None,
                 "syscall loop on the host (not traced)": None}
    with ShellContainer("lab-bench8") as box:
        scope = Scope.of_pid(box.pid)
        tracers = {kind: tracer_for(kind)(scope) for kind in KINDS}
        try:
            for tracer in tracers.values():
                set_attached(tracer, False)

            def run(workload: str) -> float:
                start = time.perf_counter()
                if workload.startswith("syscall loop in"):
                    box.run(SYSCALL_LOOP)
                elif workload.startswith("fork+exec"):
                    box.run(EXEC_LOOP)
                else:
                    subprocess.run(["/bin/busybox", "sh", "-c", SYSCALL_LOOP], check=True)
                return time.perf_counter() - start

            results = {}
            for workload in workloads:
                run(workload)   # warm up
                times = {c: [] for c in ("none",) + KINDS}
                ratios = {c: [] for c in KINDS}
                for _ in range(rounds):
                    order = ["none", *KINDS]
                    random.shuffle(order)
                    this_round = {}
                    for condition in order:
                        if condition != "none":
                            set_attached(tracers[condition], True)
                        try:
                            this_round[condition] = run(workload)
                        finally:
                            if condition != "none":
                                set_attached(tracers[condition], False)
                        # drain whatever the tracer queued, outside the timed region
                        if condition not in ("none", "syscalls"):
                            tracers[condition].drain(0)
                    for c, t in this_round.items():
                        times[c].append(t)
                    for c in KINDS:
                        ratios[c].append(this_round[c] / this_round["none"])
                results[workload] = {c: (statistics.median(times[c]), statistics.median(ratios[c]) if c in ratios
                                         else 1.0) for c in times}
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
          "(median time; median of per-round ratios to no tracer):")
    for workload, rows in slowdowns(args.rounds).items():
        print(f"  {workload}:")
        for condition, (median, ratio) in rows.items():
            print(f"    {condition:<9} {median * 1000:8.1f} ms   x{ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
