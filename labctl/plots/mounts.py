"""Step 2's mechanism figure: the mount tree of a container just before pivot_root and just after.

mount_trees() takes what labctl.demos.mounts.around_pivot_root() measured: two lists of Mount (id, parent
id, mount point, type) from /proc/PID/mountinfo of one process, and the path of the image's root.
Each tree is drawn as `findmnt` prints it: one row per mount, indented under the mount it sits on.
"""
from __future__ import annotations

from typing import Sequence

HOST, ROOT, CONTAINER = "#d9d9d9", "#4c72b0", "#f2c57c"   # fill colours; hatching and text say the same
ROOT_LABEL = "ROOTFS"


def _pyplot():
    import matplotlib
    if "inline" not in matplotlib.get_backend().lower() and "nbagg" not in matplotlib.get_backend().lower():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _children(mounts: Sequence) -> tuple[dict[int, list], list]:
    """{parent id: [child mounts]} and the roots (mounts whose parent is not in the table)."""
    ids = {m.id for m in mounts}
    children: dict[int, list] = {}
    for m in mounts:
        if m.parent in ids and m.parent != m.id:
            children.setdefault(m.parent, []).append(m)
    return children, [m for m in mounts if m.parent not in ids or m.parent == m.id]


def _rows(mounts: Sequence, keep: set[int] | None) -> list[tuple[int, object, str]]:
    """Depth-first (depth, mount or None, summary text): mounts outside `keep` become one summary row
    per parent ("… 31 more host mounts")."""
    children, roots = _children(mounts)
    rows: list[tuple[int, object, str]] = []

    def walk(m, depth: int) -> None:
        rows.append((depth, m, ""))
        kids = sorted(children.get(m.id, []), key=lambda c: c.id)
        hidden = [k for k in kids if keep is not None and k.id not in keep]
        for kid in kids:
            if keep is None or kid.id in keep:
                walk(kid, depth + 1)
        if hidden:
            sample = ", ".join(k.point for k in hidden[:3])
            total = sum(len(_subtree(mounts, k.id)) for k in hidden)
            rows.append((depth + 1, None, f"… {total} more host mounts, not drawn ({sample}, …)"))

    for r in roots:
        walk(r, 0)
    return rows


def _subtree(mounts: Sequence, top_id: int) -> set[int]:
    children, _ = _children(mounts)
    found, todo = set(), [top_id]
    while todo:
        i = todo.pop()
        found.add(i)
        todo += [c.id for c in children.get(i, [])]
    return found


def _ancestors(mounts: Sequence, mount_id: int) -> set[int]:
    by_id = {m.id: m for m in mounts}
    found = set()
    while mount_id in by_id and mount_id not in found:
        found.add(mount_id)
        mount_id = by_id[mount_id].parent
    return found


def _draw(ax, rows, root_id: int, inside: set[int], root_path: str) -> None:
    from matplotlib.patches import Rectangle
    for y, (depth, m, summary) in enumerate(rows):
        x = depth * 0.5
        if m is None:
            ax.text(x, y, summary, va="center", fontsize=9, style="italic", color="#555555")
            continue
        point = m.point.replace(root_path, ROOT_LABEL, 1) if root_path != "/" else m.point
        if m.id == root_id:
            colour, hatch, tag = ROOT, "//", "  ← the image's root (bind mount)"
        elif m.id in inside:
            colour, hatch, tag = CONTAINER, "..", ""
        else:
            colour, hatch, tag = HOST, "", ""
        ax.add_patch(Rectangle((x - 0.03, y - 0.3), 0.16, 0.6, facecolor=colour, hatch=hatch, edgecolor="#333333"))
        ax.text(x + 0.2, y, f"{m.id}  {point}  [{m.fstype}]{tag}", va="center", fontsize=9,
                fontweight="bold" if m.id == root_id else "normal")
    stack: list[tuple[int, int]] = []   # (depth, row) of the open ancestors, for the connector lines
    for y, (depth, _, _) in enumerate(rows):
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            px, py = stack[-1][0] * 0.5 + 0.05, stack[-1][1]
            ax.plot([px, px, depth * 0.5 - 0.03], [py + 0.3, y, y], color="#777777", linewidth=0.8, zorder=0)
        stack.append((depth, y))
    ax.set_ylim(len(rows) - 0.5, -0.8)
    ax.set_xlim(-0.1, max([d for d, _, _ in rows] + [0]) * 0.5 + 6)
    ax.axis("off")


def mount_trees(before: Sequence, after: Sequence, root_path: str):
    """Two panels: the container's mount tree before pivot_root (the host's mounts, copied into its new
    mount namespace, pruned to the branch that leads to the image) and after (the image's bind mount is
    the root, with /proc, /dev, /sys beneath it). Each row: mount id, mount point, filesystem type."""
    plt = _pyplot()
    from matplotlib.patches import Patch
    bind = next(m for m in reversed(before) if m.point == root_path)
    inside_before = _subtree(before, bind.id)
    keep = _ancestors(before, bind.id) | inside_before
    rows_before, rows_after = _rows(before, keep), _rows(after, None)
    after_root = _children(after)[1][0]
    fig, (ax_b, ax_a) = plt.subplots(1, 2, figsize=(15, 0.32 * max(len(rows_before), len(rows_after)) + 2.4))
    _draw(ax_b, rows_before, bind.id, inside_before - {bind.id}, root_path)
    _draw(ax_a, rows_after, after_root.id, {m.id for m in after} - {after_root.id}, "/")
    ax_b.set_title(f"before pivot_root: {len(before)} mounts (the host's, copied into the new namespace)",
                   fontsize=10)
    ax_a.set_title(f"after pivot_root + umount2(MNT_DETACH): {len(after)} mounts; "
                   f"mount {after_root.id} is now /", fontsize=10)
    fig.legend(handles=[Patch(facecolor=ROOT, hatch="//", edgecolor="#333333",
                               label="the image's root, bound onto itself (same mount id before and after)"),
                         Patch(facecolor=CONTAINER, hatch="..", edgecolor="#333333",
                               label="mounted for the container (/proc, /dev, /sys, /tmp)"),
                         Patch(facecolor=HOST, edgecolor="#333333", label="the host's mounts")],
               loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.suptitle(f"/proc/PID/mountinfo of one container (id, mount point, type); {ROOT_LABEL} = {root_path}")
    fig.tight_layout(rect=(0, 0.06, 1, 1))   # the legend below both trees, over neither
    return fig
