"""Step 12 benchmark: `labctl build` of a 6-instruction Dockerfile, cold (--no-cache) and fully cached,
beside Debian's buildah (`buildah bud --layers`, the same Dockerfile, its storage in a temporary directory; with runc:
Debian's buildah defaults to crun, which refuses this host's hybrid cgroups).

Run as root:  LABCTL_STATE_DIR=/tmp/labctl-bench python bench/build.py
Prints medians measured side by side (the machine is shared and noisy: read the ratios).
Goal: a fully cached rebuild under 0.5 s.
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from labctl.build.builder import build
from labctl.images import ocilayout

RUNS = 7
DOCKERFILE = """FROM {base}
ENV APP=/app
WORKDIR /app
COPY data.txt ./
RUN echo built > /app/out && ls /app > /app/list
CMD ["cat", "/app/out"]
"""


def median_time(fn, runs: int = RUNS) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def ours(context: Path) -> tuple[float, float, float, float]:
    """In-process build() cold and cached, then the `labctl build` command (a new Python each time)."""
    (context / "Dockerfile").write_text(DOCKERFILE.format(base="busybox"))
    build(context / "Dockerfile", context, "bench-build:1")   # the base image imported, the cache filled
    cold = median_time(lambda: build(context / "Dockerfile", context, "bench-build:1", no_cache=True))
    warm = median_time(lambda: build(context / "Dockerfile", context, "bench-build:1"))
    cli = [sys.executable, "-m", "labctl", "build", "-q", "-t", "bench-build:1", str(context)]
    cli_cold = median_time(lambda: subprocess.run(cli + ["--no-cache"], check=True, capture_output=True))
    cli_warm = median_time(lambda: subprocess.run(cli, check=True, capture_output=True))
    return cold, warm, cli_cold, cli_warm


def _unmount_below(path: Path) -> None:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(str(path) + "/")), reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


def buildah(context: Path, work: Path) -> tuple[float, float] | None:
    if not shutil.which("buildah"):
        return None
    layout = ocilayout.write_layout(work / "layout", {"busybox": ocilayout.busybox_image()})
    (context / "Dockerfile.buildah").write_text(DOCKERFILE.format(base=f"oci:{layout}:busybox"))
    root, runroot = work / "buildah-root", work / "buildah-run"
    base = ["buildah", "--root", str(root), "--runroot", str(runroot), "--storage-driver", "overlay"]
    bud = base + ["bud", "--layers", "--runtime", "runc", "--network", "none", "-q", "-t", "bench-build:1",
                  "-f", str(context / "Dockerfile.buildah")]
    try:
        subprocess.run(bud + [str(context)], check=True, capture_output=True)
        cold = median_time(lambda: subprocess.run(bud[:-4] + ["--no-cache"] + bud[-4:] + [str(context)],
                                                  check=True, capture_output=True))
        warm = median_time(lambda: subprocess.run(bud + [str(context)], check=True, capture_output=True))
        return cold, warm
    finally:
        subprocess.run(base + ["rmi", "-af"], capture_output=True)
        _unmount_below(work)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-build-"))
    try:
        context = work / "context"
        context.mkdir()
        (context / "data.txt").write_text("some data\n" * 100)
        cold, warm, cold_cli, warm_cli = ours(context)
        print(f"labctl build, 6 instructions, in-process: cold (--no-cache) {cold * 1e3:.0f} ms, fully cached "
              f"{warm * 1e3:.0f} ms")
        print(f"`labctl build` command: cold {cold_cli * 1e3:.0f} ms, fully cached {warm_cli * 1e3:.0f} ms "
              f"(goal < 500 ms: {'met' if warm_cli < 0.5 else 'NOT met'})")
        theirs = buildah(context, work)
        if theirs is None:
            print("buildah not installed: `apt-get install buildah` to compare")
            return
        print(f"buildah bud --layers, same Dockerfile: cold {theirs[0] * 1e3:.0f} ms, cached {theirs[1] * 1e3:.0f} ms")
        print(f"ratio `labctl build`/buildah: cold {cold_cli / theirs[0]:.2f}, cached {warm_cli / theirs[1]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
