"""Step 4 figures: what sharing layers saves on disk, and what copy-up costs on the first write."""
from __future__ import annotations

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
