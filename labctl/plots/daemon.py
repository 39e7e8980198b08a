"""Step 11 figures: where the time of one container's life through the daemon goes, request by request
(create, start, wait, delete), measured by labctl.demos.daemonrun.timed_run on the client's side
(request_latency); and one traced `run`, from the client's connect() to PID 1's execve(), one lane per
process (timeline, from labctl.tracing.daemontimeline)."""
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


#: One lane per role, top to bottom in the order the work passes through them.
LANES = ("client", "daemon", "helper", "supervisor", "PID 1")
MARKERS = {"connect": "o", "accept4": "v", "recvfrom": "s", "fork": "^", "unshare": "D", "setns": "d",
           "mount": "|", "pivot_root": "P", "cgroup_attach": "x", "execve": "*"}


def timeline(steps, phases: list[tuple[str, float]]):
    """Step 11's traced `docker run` (labctl.tracing.daemontimeline): one lane per process role, one marker
    per event (its shape says the kind: a legend lists them), the phases between the landmarks as
    hatched spans, each with its milliseconds. Above: the whole run; below: from the start request on,
    where the daemon hands over to the processes it forks (create, above, is mostly the root filesystem)."""
    from labctl.tracing.daemontimeline import landmarks
    plt = _pyplot()
    fig, axes = plt.subplots(2, 1, figsize=(10, 6.5))
    lanes = [r for r in LANES if any(s.role == r for s in steps)] + sorted({s.role for s in steps} - set(LANES))
    marks = landmarks(steps)
    start = next((s.ms for name, s in marks if name == "start request"), 0.0)
    for ax, since in zip(axes, (None, start)):
        _lanes(ax, [s for s in steps if since is None or s.ms >= since], lanes, marks, phases)
        if since is not None:
            ax.set_xlim(left=since - 0.5)
    axes[0].set_title("One `run --rm busybox true` through the daemon, traced in the kernel (bcc)")
    axes[1].set_title("the same, from the start request on", fontsize=9)
    axes[1].set_xlabel("ms since the client's connect() on the daemon's socket")
    axes[1].legend(*axes[0].get_legend_handles_labels(), ncols=5, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    fig.tight_layout()
    return fig


def _lanes(ax, steps, lanes: list[str], marks, phases) -> None:
    for kind, marker in MARKERS.items():
        points = [(s.ms, lanes.index(s.role)) for s in steps if s.kind == kind]
        if points:
            ax.scatter(*zip(*points), marker=marker, s=60 if marker != "|" else 120, color="black",
                       facecolors="none" if marker in "osvD^dP" else None, label=kind, zorder=3)
    y = len(lanes) - 0.35
    for i, ((_, a), (_, b)) in enumerate(zip(marks, marks[1:])):
        ax.axvspan(a.ms, b.ms, alpha=0.12, hatch=HATCHES[i % len(HATCHES)], color="gray")
        ax.text((a.ms + b.ms) / 2, y + 0.2 * (i % 2), f"{phases[i][1]:.1f}", ha="center", fontsize=7, clip_on=True)
    for _, s in marks:
        ax.axvline(s.ms, color="gray", linewidth=0.5)
    ax.set_yticks(range(len(lanes)), [f"{r} ({next(s.pid for s in steps if s.role == r)})"
                                      if any(s.role == r for s in steps) else r for r in lanes])
    ax.set_ylim(len(lanes) - 0.1, -0.6)
