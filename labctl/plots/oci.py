"""Step 10 figure: the time each phase of an OCI container's life takes (create, start, delete) in
labctl-runtime, runc and crun, measured on one bundle (labctl.demos.ocicompare.time_phases)."""
from __future__ import annotations

import statistics


def _pyplot():
    import matplotlib
    if "inline" not in matplotlib.get_backend().lower() and "nbagg" not in matplotlib.get_backend().lower():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def phase_times(times: dict[str, dict[str, list[float]]]):
    """Grouped bars: for each phase, the median milliseconds of each runtime, the fastest and slowest
    run drawn as the error bar. `times` is {runtime: {phase: [seconds, ...]}}."""
    plt = _pyplot()
    runtimes = list(times)
    phases = list(next(iter(times.values())))
    width = 0.8 / len(runtimes)
    fig, ax = plt.subplots(figsize=(7, 4))
    hatches = ("", "//", "..", "xx")
    for i, name in enumerate(runtimes):
        medians = [statistics.median(times[name][p]) * 1000 for p in phases]
        low = [m - min(times[name][p]) * 1000 for m, p in zip(medians, phases)]
        high = [max(times[name][p]) * 1000 - m for m, p in zip(medians, phases)]
        xs = [x + (i - (len(runtimes) - 1) / 2) * width for x in range(len(phases))]
        bars = ax.bar(xs, medians, width, yerr=[low, high], capsize=3, label=name, hatch=hatches[i % len(hatches)],
                      edgecolor="black", linewidth=0.5)
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=2)
    ax.set_xticks(range(len(phases)), phases)
    ax.set_ylabel("time per command (ms, median; bars: min to max)")
    ax.set_xlabel("OCI operation (one process each, as containerd's shim calls them)")
    ax.set_title(f"One bundle, {len(runtimes)} OCI runtimes: the cost of each phase")
    ax.legend(title="runtime")
    fig.tight_layout()
    return fig
