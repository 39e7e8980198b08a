"""Figures for step 7: a `labctl stats` view over time of several containers under different limits.

stats_over_time() takes what container.stats.measure_workloads() returns.
"""
from __future__ import annotations


def _pyplot():
    import matplotlib
    if "ipykernel" not in __import__("sys").modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _describe(limits: dict) -> str:
    parts = [f"--cpus {limits['cpus']:g}" if "cpus" in limits else "", f"-m {limits['memory']}" if "memory" in limits else ""]
    return " ".join(p for p in parts if p) or "no limits"


def stats_over_time(series: dict):
    """Two panels: CPU % (100% = one CPU) and memory (MiB) per container over time, each limit dashed."""
    plt = _pyplot()
    fig, (cpu_ax, mem_ax) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (name, s), color in zip(series.items(), colors):
        label = f"{name} ({_describe(s['limits'])})"
        cpu_ax.plot(s["t"], s["cpu_percent"], color=color, label=label)
        mem_ax.plot(s["t"], [b / 2**20 for b in s["memory_bytes"]], color=color, label=label)
        if "cpus" in s["limits"]:
            cpu_ax.axhline(100 * s["limits"]["cpus"], color=color, linestyle="--", linewidth=1)
        if "memory" in s["limits"]:
            from labctl.kernel.cgroups.limits import parse_bytes
            mem_ax.axhline(parse_bytes(s["limits"]["memory"]) / 2**20, color=color, linestyle="--", linewidth=1)
    cpu_ax.set_title("labctl stats over time: containers under different limits (dashed: the limit)")
    cpu_ax.set_ylabel("CPU (% of one CPU)")
    mem_ax.set_ylabel("memory charged to the cgroup (MiB)")
    mem_ax.set_xlabel("time since sampling began (s)")
    cpu_ax.legend(fontsize=8, loc="upper right")
    mem_ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig
