"""Step 4 benchmarks: unpacking (labctl vs umoci), mounting a container root, copy-up, layer sharing.

Run as root:  LABCTL_STATE_DIR=/tmp/labctl-bench python bench/overlay.py
Prints medians measured side by side (the machine is shared and noisy: read the ratios).
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from labctl.images import archive as imageimport, ocilayout
from labctl.demos import overlay as measurements
from labctl.kernel import overlay
from labctl.images.store import ImageStore

RUNS = 7


def median_time(fn, runs: int = RUNS) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-overlay-"))
    try:
        layout = ocilayout.write_layout(work / "layout", {"busybox": ocilayout.busybox_image()})

        counter = iter(range(10**6))

        def ours():
            store = ImageStore(work / f"store{next(counter)}")
            imageimport.import_layout(store, layout, "busybox")
            shutil.rmtree(store.root)

        def umoci():
            dest = work / f"bundle{next(counter)}"
            subprocess.run(["umoci", "unpack", "--image", f"{layout}:busybox", str(dest)], check=True,
                           capture_output=True)
            shutil.rmtree(dest)

        t_ours, t_umoci = median_time(ours), median_time(umoci)
        print(f"import+unpack busybox (1 layer, {len(ocilayout.busybox_image().layers[0].tar) // 1024} KiB tar): "
              f"labctl {t_ours * 1e3:.1f} ms, umoci unpack {t_umoci * 1e3:.1f} ms, ratio {t_ours / t_umoci:.2f}")

        store = ImageStore()
        imageimport.import_lab_images(store)
        t_warm = median_time(lambda: imageimport.import_lab_images(store))
        print(f"labctl prepare's image import when already present: {t_warm * 1e3:.1f} ms")

        def create_remove():
            overlay.ContainerRoot.create(store, "localhost/layered:latest", f"lab-bench-{os.getpid()}").remove()
        print(f"ContainerRoot create+remove (3-layer overlay mount, journal records): "
              f"{median_time(create_remove) * 1e3:.1f} ms")

        sizes = [1 << 20, 16 << 20, 64 << 20, 256 << 20]
        runs = [measurements.measure_copy_up(sizes) for _ in range(3)]
        for i, size in enumerate(sizes):
            first = statistics.median(r[i].first_write_s for r in runs)
            later = statistics.median(r[i].later_write_s for r in runs)
            print(f"copy-up {size >> 20:4d} MiB: first write {first * 1e3:7.2f} ms, later {later * 1e3:.3f} ms, "
                  f"ratio {first / later:,.0f}x")

        points = measurements.measure_sharing(store, "localhost/busybox:latest", 20, prefix=f"lab-bench-s{os.getpid()}")
        last = points[-1]
        print(f"20 busybox containers on disk: {last.shared_bytes / 1e6:.2f} MB with shared layers, "
              f"{last.copies_bytes / 1e6:.2f} MB as full copies (ratio {last.copies_bytes / last.shared_bytes:.1f}x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
