"""What a cgroup costs: creating and removing one, starting a process in it, and reading its statistics.

    sudo .venv/bin/python bench/cgroups.py [ROUNDS]

Medians of ROUNDS runs, side by side, and ratios (this machine is shared and noisy: read the ratios).
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("LABCTL_STATE_DIR", tempfile.mkdtemp(prefix="labctl-bench-cgroups-"))

from labctl.kernel import namespaces  # noqa: E402
from labctl.kernel.cgroups import Cgroup, detect, parse_limits  # noqa: E402


def medians_ms(funcs: dict, rounds: int) -> dict[str, float]:
    """Run the functions in turn, round after round (so load changes hit them all alike): medians."""
    times: dict[str, list[float]] = {name: [] for name in funcs}
    for _ in range(rounds):
        for name, func in funcs.items():
            t = time.perf_counter()
            func()
            times[name].append((time.perf_counter() - t) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def main(rounds: int = 30) -> None:
    layout = detect()
    limits = parse_limits(memory="64m", cpus="0.5", pids_limit=32)
    print(f"cgroup mode {layout.mode}: {len(layout.hierarchies())} hierarchies per lab cgroup; {rounds} rounds")

    def create_remove():
        Cgroup.create(f"bench-{os.getpid()}", limits).remove()

    def spawn_plain():
        namespaces.spawn(["true"]).wait()

    cg = Cgroup.create(f"bench-spawn-{os.getpid()}", limits)
    try:
        def spawn_in_cgroup():
            cg.spawn(["true"]).wait()
        rows = medians_ms({
            "create + limits + remove": create_remove,
            "spawn `true` in namespaces": spawn_plain,
            "the same, in the cgroup": spawn_in_cgroup,
            "stats() (every counter)": cg.stats,
        }, rounds)
    finally:
        cg.remove()
    for name, ms in rows.items():
        print(f"  {name:28} {ms:8.2f} ms")
    print(f"  cgroup spawn / plain spawn  {rows['the same, in the cgroup'] / rows['spawn `true` in namespaces']:8.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
