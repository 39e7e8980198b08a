"""Step 4 figures: what sharing layers saves on disk, and what copy-up costs on the first write."""
from __future__ import annotations

import os

import matplotlib
import matplotlib.ticker

from labctl.demos.overlay import CopyUpTiming, SharingPoint


def _pyplot():
    import sys
    if "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def sharing_figure(points: list[SharingPoint], image_bytes: int | None = None, title_image: str = "busybox"):
    """Disk used by N containers of one image: OverlayFS (layers once + N upper dirs) vs N full copies."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    n = [p.containers for p in points]
    ax.plot(n, [p.copies_bytes / 1e6 for p in points], "o-", color="tab:red", label="N full copies (cp -a)")
    ax.plot(n, [p.shared_bytes / 1e6 for p in points], "o-", color="tab:blue",
            label="OverlayFS: shared layers + N upper dirs")
    if image_bytes:
        ax.axhline(image_bytes / 1e6, color="grey", linestyle="--", label="the image's layers, stored once")
    ax.set_title(f"Disk used by N containers of {title_image} (measured, st_blocks)")
    ax.set_xlabel("containers (N)")
    ax.set_ylabel("disk used (MB)")
    ax.set_ylim(bottom=0)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.legend()
    fig.tight_layout()
    return fig


def copy_up_figure(timings: list[CopyUpTiming]):
    """Time of the first write to a lower-layer file (copy-up of the whole file) vs later writes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    sizes = [t.size_bytes / 2**20 for t in timings]
    ax.plot(sizes, [t.first_write_s * 1e3 for t in timings], "o-", color="tab:red",
            label="first write (copy-up, then write)")
    ax.plot(sizes, [t.later_write_s * 1e3 for t in timings], "o-", color="tab:green",
            label="later writes (median; file already in upperdir)")
    later = sorted(t.later_write_s for t in timings)[len(timings) // 2] * 1e3
    ax.axhline(later, color="grey", linestyle="--", label=f"a write without copy-up ≈ {later:.3f} ms")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_title("Copy-up: writing 1 byte to a file from a lower layer")
    ax.set_xlabel("size of the lower-layer file (MiB)")
    ax.set_ylabel("time of open(O_WRONLY) + 1-byte write (ms)")
    ax.legend()
    fig.tight_layout()
    return fig


#: How each kind of entry is drawn: (fill, hatch, edge). The text in the cell says the same in words.
CELL_STYLES = {"copy-up": ("#f2c57c", "//", "#222222"), "whiteout": ("#555555", "xx", "#000000"),
               "opaque dir": ("#b7d3e9", "\\\\", "#222222"), "plain": ("#eeeeee", "", "#999999")}


def _columns(snapshot: dict, limit: int) -> list[str]:
    """The paths worth a column: every non-directory (or opaque) entry of the upper layer and of every
    lower layer but the bottom one (the base image, hundreds of files); plain parent dirs are left out."""
    layers = [snapshot["upper"][1]] + [entries for _, entries in snapshot["lowers"][:-1]]
    paths = sorted({p for entries in layers for p, kind in entries.items() if kind != "dir"})
    return paths[:limit]


def _cell(kind: str | None, lower_has_file: bool, is_upper: bool) -> tuple[str, str]:
    """(text, style) of one cell: what this directory holds at this path."""
    if kind is None:
        return "", ""
    if kind == "whiteout":
        return "WHITEOUT\nchar dev 0/0", "whiteout"
    if kind == "opaque dir":
        return "OPAQUE dir\n(hides lower)", "opaque dir"
    if is_upper and kind.startswith("file") and lower_has_file:
        return f"COPY-UP\n{kind}", "copy-up"
    return kind, "plain"


def overlay_stack(snapshot: dict, max_columns: int = 9):
    """The overlay as the kernel stacks it, one row per directory (merged view on top, then upperdir,
    then each lowerdir top first, workdir last), one column per path that some layer changes: what each
    directory holds there. A copy-up (a file in upperdir that a lower layer also has), a whiteout (a
    char device 0/0) and an opaque directory are hatched and named in the cell. `snapshot` is what
    labctl.demos.overlay.stack_snapshot() read from a mounted root."""
    plt = _pyplot()
    from matplotlib.patches import Patch
    columns = _columns(snapshot, max_columns)
    upper_path, upper = snapshot["upper"]
    lowers = snapshot["lowers"]
    rows = [("merged:\nwhat the container sees", snapshot["merged"], False)]
    rows.append((f"upperdir (writable,\nthis container's): {len(upper)} entries", upper, True))
    for i, (path, entries) in enumerate(lowers):
        where = "top" if i == 0 else "bottom" if i == len(lowers) - 1 else "middle"
        rows.append((f"lowerdir {i + 1} ({where})\nsha256:{os.path.basename(path)[:12]}: {len(entries)} entries",
                     entries, False))
    fig, ax = plt.subplots(figsize=(2.0 + 1.45 * len(columns) + 3.5, 1.0 * len(rows) + 2.6))
    for y, (_, entries, is_upper) in enumerate(rows):
        for x, path in enumerate(columns):
            lower_has = any(e.get(path, "").startswith("file") for _, e in lowers)
            text, style = _cell(entries.get(path), lower_has, is_upper)
            if y == 0 and not text and any(path in e for _, e in lowers):
                text, style = "(gone)", ""
            if style:
                fill, hatch, edge = CELL_STYLES[style]
                ax.add_patch(plt.Rectangle((x + 0.04, y + 0.08), 0.92, 0.84, facecolor=fill, hatch=hatch,
                                           edgecolor=edge, linewidth=1.2))
            marked = style in ("copy-up", "whiteout", "opaque dir")   # text on white over the hatching
            ax.text(x + 0.5, y + 0.5, text or "·", ha="center", va="center", fontsize=8,
                    color="#999999" if not style else "black",
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.5} if marked else None)
    ax.axhline(1, color="black", linewidth=1.5)
    work_path, work = snapshot["work"]
    ax.text(0.05, len(rows) + 0.45, f"workdir {work_path}: {len(work)} entries "
            f"({', '.join(sorted(work)) or 'empty'}): the kernel's scratch space, where a copy-up is prepared "
            "before it is renamed into upperdir", fontsize=8, va="center")
    ax.set_xlim(0, len(columns))
    ax.set_ylim(len(rows) + 0.9, 0)
    ax.set_xticks([x + 0.5 for x in range(len(columns))], ["/" + c for c in columns], rotation=20, ha="right",
                  fontsize=8)
    ax.set_yticks([y + 0.5 for y in range(len(rows))], [r[0] for r in rows], fontsize=8)
    ax.tick_params(length=0)
    ax.set_title(f"An overlay mount, layer by layer (upperdir …/{os.path.basename(os.path.dirname(upper_path))}/upper)")
    ax.legend(handles=[Patch(facecolor=f, hatch=h, edgecolor=e, label=label) for (f, h, e), label in (
        (CELL_STYLES["copy-up"], "copy-up: a lower file, copied whole into upperdir at the first write"),
        (CELL_STYLES["whiteout"], "whiteout: a char device 0/0 that hides the lower file"),
        (CELL_STYLES["opaque dir"], "opaque dir: trusted.overlay.opaque=y hides the lower dir's entries"))],
        loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=1, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
