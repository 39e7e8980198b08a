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


STEP_TOPICS = {1: "namespaces", 2: "root filesystem", 3: "cgroups", 4: "OverlayFS", 6: "network", 0: "other"}
STEP_HATCHES = {1: "", 2: "//", 3: "..", 4: "xx", 6: "\\\\", 0: "--"}


def runs(calls: Sequence, key) -> list[list]:
    """Consecutive calls with the same key(call), as lists: the rows of the figures below."""
    groups: list[list] = []
    for c in calls:
        if groups and key(groups[-1][-1]) == key(c):
            groups[-1].append(c)
        else:
            groups.append([c])
    return groups


def _row_label(group: Sequence) -> str:
    first = group[0]
    if len(group) == 1:
        return first.text if len(first.text) < 80 else first.text[:77] + "..."
    return f"{first.name} ×{len(group)}: {first.why}"[:90]


def construction_timeline(calls: Sequence, start_ns: int):
    """The syscalls that built a container, in order: one row per run of the same call by the same
    process (mount ×4, mknodat ×6), a marker at each call's entry and a bar to its return, coloured
    and shaded by the curriculum step that explains it (a band per phase, named at the right), the
    row labelled with the process (labctl, helper, PID 1). The dashed line is pivot_root: after it
    the container no longer sees the host's files."""
    plt = _pyplot()
    rows = runs(calls, lambda c: (c.role, c.name, c.step))
    fig, ax = plt.subplots(figsize=(13, 0.36 * len(rows) + 2.2))
    end = max([(c.ts - start_ns + c.duration) / 1e6 for c in calls] + [1])
    y = 0
    for phase in runs(rows, lambda group: group[0].step):
        step = phase[0][0].step
        colour = STEP_COLOURS.get(step, "#999999")
        ax.axhspan(y - 0.5, y + len(phase) - 0.5, facecolor=colour, alpha=0.12, hatch=STEP_HATCHES.get(step, ""),
                   edgecolor=colour, linewidth=0)
        ax.text(end * 1.98, y + len(phase) / 2 - 0.5, f"step {step}" if step else "other", va="center",
                ha="right", fontsize=9, color=colour, fontweight="bold")
        for group in phase:
            for c in group:
                x = (c.ts - start_ns) / 1e6
                ax.scatter([x], [y], color=colour, s=28, zorder=3)
                ax.plot([x, x + c.duration / 1e6], [y, y], color=colour, linewidth=3, zorder=2)
                if c.name == "pivot_root":
                    ax.axvline(x, color="#333333", linestyle="--", linewidth=1, label="pivot_root")
            last = group[-1]
            ax.text((last.ts - start_ns + last.duration) / 1e6 + end * 0.01, y, _row_label(group), va="center",
                    fontsize=8.5)
            y += 1
    for step, colour in STEP_COLOURS.items():
        if any(c.step == step for c in calls):
            ax.scatter([], [], color=colour, label=f"step {step}: {STEP_TOPICS[step]}" if step else "other")
    ax.legend(loc="lower left", fontsize=8.5)
    ax.set_yticks(range(len(rows)), [group[0].role for group in rows], fontsize=8.5)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(0, end * 2.0)
    ax.set_xlabel("time since the build began (ms)")
    ax.set_ylabel("process making the call")
    ax.set_title(f"A container being built: {len(calls)} syscalls of the lab's own, traced with eBPF, "
                 f"in {len(rows)} rows")
    fig.tight_layout()
    return fig


def build_order(calls: Sequence, start_ns: int, title: str = "The order in which a container is built"):
    """Phases of a build, in order: each run of consecutive calls explained by the same step is one
    numbered row, a bar from its first call to its last return with a tick per call, and what it did
    (mkdir ×10, write ×2). Colour and hatching say the step. `calls` from buildtrace.trace_construction."""
    plt = _pyplot()
    from collections import Counter
    from matplotlib.patches import Patch
    phases = runs(calls, lambda c: c.step)
    fig, ax = plt.subplots(figsize=(13, 0.42 * len(phases) + 2.2))
    end = max([(c.ts - start_ns + c.duration) / 1e6 for c in calls] + [1])
    for y, phase in enumerate(phases):
        step = phase[0].step
        colour = STEP_COLOURS.get(step, "#999999")
        t0 = (phase[0].ts - start_ns) / 1e6
        t1 = max((c.ts - start_ns + c.duration) / 1e6 for c in phase)
        ax.barh(y, max(t1 - t0, end / 300), left=t0, height=0.6, color=colour, alpha=0.8,
                hatch=STEP_HATCHES.get(step, ""), edgecolor="#333333")
        ax.scatter([(c.ts - start_ns) / 1e6 for c in phase], [y] * len(phase), marker="|", color="black",
                   s=60, zorder=3)
        names = Counter(f"execve {c.strings[0].rsplit('/', 1)[-1]}" if c.name == "execve" and c.strings else c.name
                        for c in phase)
        what = ", ".join(f"{name} ×{n}" if n > 1 else name for name, n in names.items())
        ax.text(t1 + end * 0.01, y, f"{y + 1}. step {step} ({STEP_TOPICS.get(step, '?')}): {what}"[:100],
                va="center", fontsize=9)
    ax.legend(handles=[Patch(facecolor=STEP_COLOURS[s], hatch=STEP_HATCHES[s], edgecolor="#333333",
                             label=f"step {s}: {STEP_TOPICS[s]}") for s in STEP_COLOURS
                       if any(c.step == s for c in calls)], loc="lower left", fontsize=8.5)
    ax.set_yticks(range(len(phases)), [str(i + 1) for i in range(len(phases))], fontsize=9)
    ax.set_ylim(len(phases) - 0.5, -0.5)
    ax.set_xlim(0, end * 1.7)
    ax.set_xlabel("time since the build began (ms)")
    ax.set_ylabel("phase, in order")
    ax.set_title(f"{title}: {len(calls)} syscalls in {len(phases)} phases (eBPF trace)")
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
