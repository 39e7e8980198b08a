"""Step 12 figures: what the layer cache saves on a rebuild, and what a push of a second image on the
same base sends. Both take data measured by labctl.demos.buildpush (BuildResult.steps, PushResult.blobs)."""
from __future__ import annotations

from labctl.plots.oci import _pyplot

HATCHES = ("", "//", "..")


def rebuild_times(runs: dict[str, list]):
    """Seconds per instruction, one group of bars per instruction, one bar per build: `runs` is
    {label: steps}, each step with .number, .instruction, .cached, .seconds (BuildResult.steps), the
    builds of one Dockerfile. A step taken from the cache is marked "cached" beside its bar."""
    plt = _pyplot()
    labels = list(runs)
    first = runs[labels[0]]
    names = [f"{s.number} {s.instruction[:34]}" for s in first]
    fig, ax = plt.subplots(figsize=(9, 0.75 * len(first) + 1.6))
    height = 0.8 / len(labels)
    for i, label in enumerate(labels):
        steps = runs[label]
        ys = [n + i * height for n in range(len(steps))]
        secs = [s.seconds * 1000 for s in steps]
        bars = ax.barh(ys, secs, height=height, label=label, hatch=HATCHES[i % len(HATCHES)],
                       edgecolor="black", linewidth=0.5)
        ax.bar_label(bars, labels=["cached" if s.cached else f"{s.seconds * 1000:.0f}" for s in steps],
                     padding=3, fontsize=7)
    ax.set_yticks([n + 0.4 - height / 2 for n in range(len(first))], names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("time of the instruction (ms)")
    ax.set_title("One Dockerfile built three times: each instruction's time")
    ax.legend(title="build", loc="lower right")
    ax.margins(x=0.15)
    fig.tight_layout()
    return fig


def push_bytes(pushes: dict[str, list]):
    """Bytes sent per push, stacked by blob, beside the bytes the image holds: `pushes` is
    {label: blobs}, each blob with .what, .size, .action, .bytes_sent (PushResult.blobs). A blob the
    registry already had (exists, mounted) sends nothing: it appears only in the image's bar."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 1.0 * len(pushes) + 1.8))
    for row, (label, blobs) in enumerate(pushes.items()):
        held = sum(b.size for b in blobs) / 1024
        ax.barh(row + 0.2, held, height=0.35, color="white", edgecolor="black", hatch="..",
                label="the image's blobs" if row == 0 else None)
        left = 0.0
        for b in blobs:
            if b.bytes_sent:
                ax.barh(row - 0.2, b.bytes_sent / 1024, left=left, height=0.35, edgecolor="black", linewidth=0.5)
                if b.bytes_sent / 1024 > held / 12:
                    ax.text(left + b.bytes_sent / 2048, row - 0.2, b.what, ha="center", va="center", fontsize=7)
                left += b.bytes_sent / 1024
        kept = [f"{b.what}: {b.action}" for b in blobs if not b.bytes_sent]
        ax.text(left, row - 0.2, f"  {left:.0f} KiB sent" + (f" ({', '.join(kept)})" if kept else ""),
                va="center", fontsize=7)
    ax.set_yticks(range(len(pushes)), list(pushes))
    ax.invert_yaxis()
    ax.set_xlabel("KiB (upper bar: sent on the wire, by blob; lower bar: all the image's blobs)")
    ax.set_title("Two pushes to one registry: only the blobs it lacks travel")
    ax.legend(loc="lower right", fontsize=8)
    ax.margins(x=0.35)
    fig.tight_layout()
    return fig
