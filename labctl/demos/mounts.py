"""Step 2's measurement: a container's mount table just before pivot_root and just after, read by the kernel.

Both tables come from one process, so the mount ids compare: /proc/PID/mountinfo gives each mount an id
and the id of the mount it sits on (its parent), which makes the mount tree. Before pivot_root the new
mount namespace holds a copy of all the host's mounts, with the image's root bound onto itself somewhere
beneath them; after pivot_root and the detach of the old root, that same bind mount (same id) is the
root of the tree, and only the mounts beneath it are left. labctl/plots/mounts.py draws both.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Mount:
    """One line of /proc/PID/mountinfo (proc(5)): the fields a tree needs."""
    id: int
    parent: int
    point: str        # the mount point, as this process sees it
    fstype: str
    source: str       # the device or the bind's origin (field 4 for binds: the root within its filesystem)


def parse_mountinfo(text: str) -> list[Mount]:
    """`36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw` → Mount(36, 35, "/mnt2", "ext3", ...)."""
    mounts = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or not tail:
            continue
        unescape = lambda s: s.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")  # noqa: E731
        root = unescape(fields[3])
        source = root if root != "/" else (tail[1] if len(tail) > 1 else "")
        mounts.append(Mount(int(fields[0]), int(fields[1]), unescape(fields[4]), tail[0], source))
    return mounts


def mount_table(pid: int | str = "self") -> list[Mount]:
    """The mount tree of a process's mount namespace, as that process sees it."""
    return parse_mountinfo(Path(f"/proc/{pid}/mountinfo").read_text())


def around_pivot_root(root: str | os.PathLike | None = None) -> tuple[list[Mount], list[Mount], str]:
    """Start a container (step 2's setup) that copies its /proc/self/mountinfo to a host file just before
    pivot_root; read its mountinfo again once it runs. Returns (before, after, the root's path)."""
    from labctl import state
    from labctl.images import labimage
    from labctl.kernel import namespaces, rootfs
    import shutil
    root = Path(root or labimage.ensure_busybox_rootfs()).resolve()
    work = state.new_tmpdir("mounts-")
    before_file = work / "mountinfo-before-pivot_root"

    def copy_table() -> None:   # runs in the container's mount namespace, before pivot_root
        before_file.write_text(Path("/proc/self/mountinfo").read_text())

    try:
        with namespaces.spawn(["sleep", "30"], hostname="lab-mounts", what="step 2 mount tree",
                              setup=lambda: rootfs.setup_container_root(root, before_pivot=copy_table)) as proc:
            after = mount_table(proc.pid)
        before = parse_mountinfo(before_file.read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return before, after, str(root)
