"""Figures for steps 1 and 2: which namespaces a process shares, and what each /proc can see."""
from __future__ import annotations

from typing import Mapping, Sequence


def _pyplot():
    import matplotlib
    if "inline" not in matplotlib.get_backend().lower() and "nbagg" not in matplotlib.get_backend().lower():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def namespace_sharing(inodes: Mapping[str, Mapping[str, int]], reference: str):
    """A grid: one row per process, one column per namespace kind; each cell names the namespace inode
    and says "shared" (with `reference`, the host: plain, light) or "NEW" (hatched, dark edge), so it
    reads without colour, in grayscale and for colour-blind readers; the colours only repeat it."""
    plt = _pyplot()
    from matplotlib.patches import Patch
    labels = list(inodes)
    kinds = sorted(next(iter(inodes.values())))
    fig, ax = plt.subplots(figsize=(1.3 * len(kinds) + 2.5, 0.8 * len(labels) + 2.2))
    shared_style = {"facecolor": "#e8f1fa", "edgecolor": "#9ab", "hatch": "", "linewidth": 0.8}
    new_style = {"facecolor": "#f5b36b", "edgecolor": "#222222", "hatch": "///", "linewidth": 1.6}
    for row, label in enumerate(labels):
        for col, kind in enumerate(kinds):
            shared = inodes[label][kind] == inodes[reference][kind]
            ax.add_patch(plt.Rectangle((col, row), 0.95, 0.9, **(shared_style if shared else new_style)))
            ax.text(col + 0.47, row + 0.45, f"{'shared' if shared else 'NEW'}\n{str(inodes[label][kind])[-5:]}",
                    ha="center", va="center", fontsize=8, fontweight="normal" if shared else "bold",
                    bbox=None if shared else {"facecolor": "white", "edgecolor": "none", "pad": 1})
    ax.set_xlim(0, len(kinds))
    ax.set_ylim(len(labels), 0)
    ax.set_xticks([i + 0.47 for i in range(len(kinds))], kinds)
    ax.set_yticks([i + 0.45 for i in range(len(labels))], labels)
    ax.set_xlabel("namespace kind (cell: last digits of the /proc/<pid>/ns inode)")
    ax.set_title(f"Which namespaces each process shares with {reference}")
    ax.legend(handles=[Patch(**shared_style, label=f"shared: the same inode as {reference}"),
                       Patch(**new_style, label="NEW: an inode of its own (a new namespace)")],
              loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def visibility(counts: Mapping[str, Sequence[int]], categories: Sequence[str], title: str, unit: str):
    """Grouped bars: for each viewer (host, container...), how many of each thing it can see."""
    plt = _pyplot()
    viewers = list(counts)
    width = 0.8 / len(viewers)
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, viewer in enumerate(viewers):
        xs = [c + i * width for c in range(len(categories))]
        bars = ax.bar(xs, counts[viewer], width, label=viewer)
        ax.bar_label(bars)
    ax.set_xticks([c + width * (len(viewers) - 1) / 2 for c in range(len(categories))], categories)
    ax.set_ylabel(unit)
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig
