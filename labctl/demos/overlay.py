"""Step 4's measurements: what sharing layers saves on disk, and what copy-up costs on a first write.

The step 4 demo, its notebook, the plots (labctl/plots/overlay.py) and bench/overlay.py use these; the
library mounts container roots with labctl/kernel/overlay.py and never imports this module.

    measure_copy_up   a file of each size in a lower layer: the first write to it copies the whole file
                      up into upperdir first, later writes do not (time both)
    measure_sharing   N container roots of one image: the layers on disk once plus N upper dirs, against
                      N full copies of the same trees (cp -a), in blocks allocated on disk
"""
from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass

from labctl import state
from labctl.kernel.overlay import ContainerRoot, mount_overlay


def disk_usage(path: str | os.PathLike) -> int:
    """Bytes allocated on disk below `path` (st_blocks * 512), each inode counted once, mounts skipped."""
    total, seen = 0, set()
    dev = os.lstat(path).st_dev
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if os.lstat(os.path.join(root, d)).st_dev == dev]
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


@contextlib.contextmanager
def scratch_overlay(lowerdirs: list[str | os.PathLike], what: str = "scratch overlay"):
    """A throwaway overlay of `lowerdirs` (top first) with its own upper/work under <state>/tmp; yields
    (merged, upper). Recorded in the journal, unmounted and removed on exit."""
    base = state.new_tmpdir("ovl-")
    path_rec = state.record_path(str(base), what)
    merged, upper, work = base / "merged", base / "upper", base / "work"
    for d in (merged, upper, work):
        d.mkdir()
    mount_rec = state.record_mount(str(merged), what)
    try:
        mount_overlay(lowerdirs, merged, upper, work)
        yield merged, upper
    finally:
        state.unmount(str(merged))
        mount_rec.forget()
        state.remove_path(str(base))
        path_rec.forget()


@dataclass
class CopyUpTiming:
    size_bytes: int
    first_write_s: float        # open(O_WRONLY) + 1-byte write: the whole file is copied up first
    later_write_s: float        # median of the same write once the file is in upperdir


def measure_copy_up(sizes_bytes: list[int], later_writes: int = 5) -> list[CopyUpTiming]:
    """Time the first write to a lower-layer file of each size (copy-up) against later writes."""
    import statistics
    import time
    out = []
    for size in sizes_bytes:
        lower = state.new_tmpdir("ovl-lower-")
        rec = state.record_path(str(lower), "copy-up lower layer")
        try:
            with open(lower / "big", "wb") as f:
                chunk = os.urandom(1 << 20)
                for _ in range(size // len(chunk)):
                    f.write(chunk)
                f.write(chunk[: size % len(chunk)])
                os.fsync(f.fileno())
            with scratch_overlay([lower], "copy-up measurement") as (merged, _):
                def one_write() -> float:
                    t0 = time.perf_counter()
                    fd = os.open(merged / "big", os.O_WRONLY)
                    os.pwrite(fd, b"x", 0)
                    os.close(fd)
                    return time.perf_counter() - t0
                first = one_write()
                later = statistics.median(one_write() for _ in range(later_writes))
            out.append(CopyUpTiming(size, first, later))
        finally:
            state.remove_path(str(lower))
            rec.forget()
    return out


@dataclass
class SharingPoint:
    containers: int
    shared_bytes: int           # the image's layers once + every container's upper and work dirs
    copies_bytes: int           # the same root filesystems as N independent full copies


def measure_sharing(store, reference: str, max_containers: int = 20, write_bytes: int = 4096,
                    prefix: str = "lab-share") -> list[SharingPoint]:
    """Start 1..N container roots of one image (each writes one small file), and measure on disk: layers
    shared via OverlayFS vs the same trees copied N times (cp -a of each merged view)."""
    layer_bytes = sum(disk_usage(p) for p in store.layer_dirs(reference))
    roots: list[ContainerRoot] = []
    copies = state.new_tmpdir("ovl-copies-")
    rec = state.record_path(str(copies), "full-copy comparison")
    points = []
    try:
        for n in range(1, max_containers + 1):
            root = ContainerRoot.create(store, reference, f"{prefix}-{os.getpid()}-{n}")
            roots.append(root)
            (root.merged / "tmp").mkdir(exist_ok=True)
            (root.merged / "tmp" / "hello").write_bytes(b"x" * write_bytes)
            shutil.copytree(root.merged, copies / str(n), symlinks=True)
            uppers = sum(disk_usage(r.upper) + disk_usage(r.work) for r in roots)
            points.append(SharingPoint(n, layer_bytes + uppers, disk_usage(copies)))
    finally:
        for root in roots:
            root.remove()
        state.remove_path(str(copies))
        rec.forget()
    return points


def layer_entries(directory: str | os.PathLike) -> dict[str, str]:
    """{relative path: what it is} for every entry below one layer (or merged) directory, read with lstat
    and getxattr: "dir", "opaque dir" (trusted.overlay.opaque=y), "whiteout" (a character device 0/0),
    "symlink", "file N B"."""
    from labctl.kernel.overlay import is_opaque, is_whiteout
    import stat
    entries = {}
    for top, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, directory)
            if stat.S_ISDIR(st.st_mode):
                entries[rel] = "opaque dir" if is_opaque(path) else "dir"
            elif is_whiteout(path):
                entries[rel] = "whiteout"
            elif stat.S_ISLNK(st.st_mode):
                entries[rel] = "symlink"
            else:
                entries[rel] = f"file {st.st_size} B"
    return entries


def stack_snapshot(root: ContainerRoot) -> dict:
    """What each directory of a mounted container root holds now, for plots.overlay.overlay_stack:
    {"merged": entries, "upper": (path, entries), "lowers": [(path, entries), ...] top first, as the
    kernel has them in /proc/self/mountinfo's lowerdir=, "work": (path, entries)}."""
    from labctl.kernel.overlay import mount_options
    options = mount_options(root.merged)
    if options is None:
        from labctl.errors import LabError
        raise LabError(f"no overlay is mounted on {root.merged}", "mount it first (ContainerRoot.create)")
    return {"merged": layer_entries(root.merged),
            "upper": (options["upperdir"], layer_entries(options["upperdir"])),
            "lowers": [(d, layer_entries(d)) for d in options["lowerdir"].split(":")],
            "work": (options["workdir"], layer_entries(options["workdir"]))}
