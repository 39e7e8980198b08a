"""Step 11 figure: where the time of one container's life through the daemon goes, request by request
(create, start, wait, delete), measured by labctl.demos.daemonrun.timed_run on the client's side."""
from __future__ import annotations

from labctl.plots.oci import _pyplot

HATCHES = ("", "//", "..", "xx", "\\\\")


def request_latency(runs: list[dict[str, float]]):
    """One horizontal bar per run, split into its requests' times: `runs` is [{phase: seconds}, ...],
    in the order the requests were sent. Each segment is hatched (it reads in grayscale) and, when wide
    enough, labelled with its milliseconds."""
    plt = _pyplot()
    phases = list(runs[0])
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(runs) + 1.8))
    total = max(sum(r.values()) for r in runs) * 1000
    for i, phase in enumerate(phases):
        lefts = [sum(r[p] for p in phases[:i]) * 1000 for r in runs]
        widths = [r[phase] * 1000 for r in runs]
        bars = ax.barh(range(len(runs)), widths, left=lefts, label=phase, hatch=HATCHES[i % len(HATCHES)],
                       edgecolor="black", linewidth=0.5)
        ax.bar_label(bars, labels=[f"{w:.0f}" if w > total / 25 else "" for w in widths],
                     label_type="center", fontsize=7)
    ax.set_yticks(range(len(runs)), [f"run {n + 1}" for n in range(len(runs))])
    ax.invert_yaxis()
    ax.set_xlabel("time from the first byte of create to the end of delete's answer (ms)")
    ax.set_title("One container through the daemon's REST API: each request's share")
    ax.legend(title="request", ncols=len(phases), loc="upper center", bbox_to_anchor=(0.5, -0.35 - 0.5 / len(runs)))
    fig.tight_layout()
    return fig
