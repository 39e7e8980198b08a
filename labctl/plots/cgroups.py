"""Step 3 figures: what the memory, CPU and pids limits did, from the samples of labctl.demos.cgroups."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from labctl.demos.cgroups import CpuRun, MemoryRun, PidsRun


def _pyplot():
    import matplotlib
    if "inline" not in matplotlib.get_backend().lower() and "nbagg" not in matplotlib.get_backend().lower():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _seconds(samples) -> list[float]:
    t0 = samples[0].time if samples else 0.0
    return [s.time - t0 for s in samples]


def memory_until_oom(run: "MemoryRun"):
    """Memory charged to the cgroup over time, up to the OOM kill, with the limit as a line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    points = [(t, s.memory_bytes / 2**20) for t, s in zip(_seconds(run.samples), run.samples)
              if s.memory_bytes is not None]
    ax.plot([p[0] for p in points], [p[1] for p in points], label="memory used (memory.current / usage_in_bytes)")
    ax.axhline(run.limit_bytes / 2**20, color="red", linestyle="--", label=f"limit {run.limit_bytes / 2**20:.0f} MiB")
    killed_at = next((t for t, s in zip(_seconds(run.samples), run.samples) if s.oom_kills), None)
    if killed_at is not None:
        ax.axvline(killed_at, color="black", linestyle=":", label="OOM kill seen (oom_kill = 1)")
    ax.set_title("A process allocating under a memory limit, until the OOM killer ends it")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("memory (MiB)")
    ax.set_ylim(bottom=0, top=run.limit_bytes / 2**20 * 1.2)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def cpu_by_quota(runs: Sequence["CpuRun"]):
    """CPU used over time by two busy loops, one line per quota, with each quota as a dashed line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        times, rates = [], []
        t0 = run.samples[0].time
        for a, b in zip(run.samples, run.samples[1:]):
            times.append(b.time - t0)
            rates.append((b.cpu_usage_ns - a.cpu_usage_ns) / 1e9 / (b.time - a.time))
        line, = ax.plot(times, rates, marker="o", markersize=3,
                        label=f"--cpus {run.quota:g}: used {run.usage_cpus:.2f}, "
                              f"throttled {run.throttled_periods}/{run.periods} periods")
        ax.axhline(run.quota, color=line.get_color(), linestyle="--", linewidth=1)
    ax.set_title("Two busy loops under CPU quotas (dashed: the quota)")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("CPU used (CPUs)")
    ax.set_ylim(bottom=0, top=max([r.quota for r in runs] + [1.0]) * 1.4)
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    return fig


def pids_vs_limit(run: "PidsRun"):
    """The number of processes in a fork bomb's cgroup over time, against pids.max."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    # Where the count reaches the limit the two lines coincide: the count is drawn thick and solid, the
    # limit thin and dashed on top of it, so each shows through the other (and both are in the legend).
    ax.step(_seconds(run.samples), [s.pids_current for s in run.samples], where="post", color="tab:blue",
            linewidth=3, zorder=2, label="processes (pids.current)")
    ax.axhline(run.pids_max, color="red", linestyle=(0, (4, 4)), linewidth=1.5, zorder=3,
               label=f"limit pids.max = {run.pids_max}")
    ax.set_title("A fork bomb under pids.max")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("processes in the cgroup")
    ax.set_ylim(bottom=0, top=run.pids_max * 1.5)
    refused = ax.twinx()
    refused.plot(_seconds(run.samples), [s.pids_refused or 0 for s in run.samples], color="gray", linewidth=1,
                 linestyle=":",
                 label="forks refused so far (pids.events max)")
    refused.set_ylabel("forks refused (count)")
    refused.set_ylim(bottom=0)
    ax.set_zorder(refused.get_zorder() + 1)   # the count above the twin axis' line too
    ax.patch.set_visible(False)
    lines = ax.get_legend_handles_labels()
    more = refused.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right")
    fig.tight_layout()
    return fig
