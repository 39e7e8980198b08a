"""Figures for step 8: syscall histograms of two containers, the construction timeline, the exec tree."""
from __future__ import annotations

from typing import Mapping, Sequence


def _pyplot():
    import matplotlib
    if "inline" not in matplotlib.get_backend().lower() and "nbagg" not in matplotlib.get_backend().lower():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


STEP_COLOURS = {1: "#4c72b0", 2: "#55a868", 3: "#c44e52", 4: "#8172b2", 6: "#ccb974", 0: "#999999"}


def syscall_histogram(counts: Mapping[str, Mapping[str, int]], top: int = 10):
    """Side by side, one panel per container: its `top` most frequent syscalls (horizontal bars, log
    scale), on the same axis so the containers compare; the dashed line is each panel's median count."""
    plt = _pyplot()
    labels = list(counts)
    fig, axes = plt.subplots(1, len(labels), figsize=(5.5 * len(labels), 0.35 * top + 1.8), sharex=True,
                             squeeze=False)
    for ax, label in zip(axes[0], labels):
        items = sorted(counts[label].items(), key=lambda kv: -kv[1])[:top]
        names = [name for name, _ in items][::-1]
        values = [value for _, value in items][::-1]
        bars = ax.barh(names, values, color="#4c72b0")
        ax.bar_label(bars, padding=2, fontsize=8)
        ax.set_xscale("log")
        if values:
            median = sorted(values)[len(values) // 2]
            ax.axvline(median, color="#c44e52", linestyle="--", linewidth=1, label=f"median {median}")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xlabel("system calls (count, log scale)")
        ax.set_title(f"{label}: {sum(counts[label].values())} calls")
    axes[0][0].set_ylabel("syscall")
    fig.suptitle(f"Top {top} syscalls per container, counted in the kernel (raw_syscalls:sys_enter)")
    fig.tight_layout()
    return fig


def construction_timeline(calls: Sequence, start_ns: int):
    """The syscalls that built a container, one row per call in order: time (ms) across, the marker
    at entry and a bar to its return, coloured by the curriculum step that explains it, the row labelled with the process (labctl,
    helper, PID 1) and the call. The dashed line is pivot_root: after it the container no longer
    sees the host's files."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(12, 0.28 * len(calls) + 1.6))
    end = max([(c.ts - start_ns) / 1e6 for c in calls] + [1])
    for y, c in enumerate(calls):
        x = (c.ts - start_ns) / 1e6
        colour = STEP_COLOURS.get(c.step, "#999999")
        took = getattr(c, "duration", 0) / 1e6
        ax.scatter([x], [y], color=colour, s=30, zorder=3)
        ax.plot([x, x + took], [y, y], color=colour, linewidth=3, zorder=2)   # entry to return
        text = c.text if len(c.text) < 90 else c.text[:87] + "..."
        if took >= 0.5:
            text += f"  ({took:.1f} ms)"
        ax.text(x + took + end * 0.01, y, text, va="center", fontsize=7)
        if c.name == "pivot_root":
            ax.axvline(x, color="#333333", linestyle="--", linewidth=1, label="pivot_root")
    for step, colour in STEP_COLOURS.items():
        if any(c.step == step for c in calls):
            ax.scatter([], [], color=colour, label=f"explained in step {step}" if step else "other")
    ax.legend(loc="lower left", fontsize=8)
    ax.set_yticks(range(len(calls)), [c.role for c in calls], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, end * 1.9)
    ax.set_xlabel("time since the build began (ms)")
    ax.set_ylabel("process making the call")
    ax.set_title("A container being built: the lab's own syscalls, traced with eBPF")
    fig.tight_layout()
    return fig


def exec_tree(events: Sequence[Mapping], start_ns: int, end_ns: int | None = None):
    """The processes of a container over time: one bar per process from its fork to its exit, labelled
    with what it executed, and a line from the parent at the moment it forked. The dashed line is when
    tracing stopped (processes still running reach it)."""
    plt = _pyplot()
    procs: dict[int, dict] = {}

    def proc(pid: int) -> dict:
        return procs.setdefault(pid, {"start": None, "end": None, "label": "", "parent": None, "execs": []})

    for ev in sorted(events, key=lambda e: e["ts"]):
        t = (ev["ts"] - start_ns) / 1e6
        if ev["event"] == "fork":
            p = proc(ev["pid"])
            if p["start"] is None:
                p["start"] = t
                p["label"] = p["label"] or ev["comm"]
            child = proc(ev["child"])
            child["start"], child["parent"] = t, ev["pid"]
            child["label"] = child["label"] or ev["comm"]
        elif ev["event"] == "exec":
            p = proc(ev["pid"])
            p["start"] = t if p["start"] is None else p["start"]
            p["execs"].append(" ".join(ev.get("argv") or [ev["comm"]]))
            p["label"] = " → ".join(p["execs"])
        elif ev["event"] == "exit":
            p = proc(ev["pid"])
            p["start"] = t if p["start"] is None else p["start"]
            p["end"] = t
            if not p["execs"]:
                p["label"] = f"{ev['comm']} (no exec: a busybox applet run in the forked shell)"
    last = max([p["end"] or p["start"] or 0 for p in procs.values()] + [0])
    stop = (end_ns - start_ns) / 1e6 if end_ns else last * 1.05 + 1
    order = sorted(procs, key=lambda pid: (procs[pid]["start"] or 0))
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(order) + 1.6))
    for y, pid in enumerate(order):
        p = procs[pid]
        begin, end = p["start"] or 0, p["end"] if p["end"] is not None else stop
        ax.barh(y, max(end - begin, stop / 400), left=begin, height=0.5, color="#4c72b0")
        ax.text(end, y, f"  {p['label'][:70]} ({pid})", va="center", fontsize=8)
        if p["parent"] in procs:
            ax.plot([begin, begin], [order.index(p["parent"]), y], color="#999999", linewidth=1)
    ax.axvline(stop, color="#c44e52", linestyle="--", linewidth=1, label="tracing stopped")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(range(len(order)), [str(pid) for pid in order])
    ax.invert_yaxis()
    ax.set_xlabel("time since tracing began (ms)")
    ax.set_ylabel("host PID")
    ax.set_title("Processes of one container over time (sched_process_fork/exec/exit)")
    fig.tight_layout()
    return fig
