"""Step 2: the root filesystem. chroot (and why it is not enough), then pivot_root, /proc, /dev, /sys.

Everything here runs inside the container's own mount namespace (as the `setup` of
namespaces.spawn), after mount propagation is made private, so no mount leaks to the host and
every mount vanishes with the namespace.

The sequence, as runc's rootfs_linux.go does it:
  1. mount("", "/", MS_REC|MS_PRIVATE)          our mounts stop propagating to the host
  2. mount(rootfs, rootfs, MS_BIND|MS_REC)        pivot_root needs the new root to be a mount point
  3. mount proc, a tmpfs /dev with a few nodes, devpts, /dev/shm, sysfs read-only, tmpfs /tmp
  4. chdir(rootfs); pivot_root(".", ".")          the old root is now stacked under the new one...
  5. umount2(".", MNT_DETACH); chdir("/")         ...and detaching it leaves nothing of the host
  6. remount / read-only (bind, MS_RDONLY)         the shared lab image stays unchanged
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from labctl.errors import LabError
from labctl.kernel.syscalls import (MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY,
                             MS_REC, MS_REMOUNT, mount, pivot_root, umount2)

#: The minimal /dev: name -> (major, minor). Docker's default set.
DEVICES = {
    "null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0),
}


def make_mounts_private() -> None:
    """mount(NULL, "/", NULL, MS_REC|MS_PRIVATE): stop mount events propagating to and from the host."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)


def check_rootfs(rootfs: str | os.PathLike) -> Path:
    root = Path(rootfs)
    if not (root / "bin").is_dir():
        raise LabError(f"{root} does not look like a root filesystem (no bin/ inside)",
                       "build the lab image with `labctl prepare`, or give the path of an unpacked image")
    return root


def mount_proc(root: Path) -> None:
    """mount("proc", root/proc, "proc"): a procfs for the PID namespace of the mounting process."""
    mount("proc", str(root / "proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def mount_dev(root: Path, owner: tuple[int, int] | None = None) -> None:
    """A tmpfs /dev with the six character devices (mknod), devpts at /dev/pts, a tmpfs /dev/shm.
    owner: the (uid, gid) the tmpfs's root belongs to (step 9's --userns remap: root inside's)."""
    dev = root / "dev"
    mount("tmpfs", str(dev), "tmpfs", MS_NOSUID | MS_NOEXEC,
          "mode=755,size=64k" + (",uid=%d,gid=%d" % owner if owner else ""))
    for name, (major, minor) in DEVICES.items():
        os.mknod(dev / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(dev / name, 0o666)  # mknod's mode is filtered by the umask
    (dev / "pts").mkdir()
    # newinstance: the container's own pty numbering, not the host's
    mount("devpts", str(dev / "pts"), "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620")
    os.symlink("pts/ptmx", dev / "ptmx")
    (dev / "shm").mkdir()
    mount("shm", str(dev / "shm"), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=64m")
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{i}", dev / name)
    os.symlink("/proc/self/fd", dev / "fd")


def mount_sys_readonly(root: Path, readonly: bool = True) -> None:
    """mount("sysfs", root/sys, "sysfs", MS_RDONLY): the container may read /sys, never change it.
    (readonly=False: read-write, as Docker mounts it for --privileged containers.)"""
    mount("sysfs", str(root / "sys"), "sysfs", (MS_RDONLY if readonly else 0) | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def enter_root(root: Path) -> None:
    """chdir(root); pivot_root(".", "."); umount2(".", MNT_DETACH): the host's root is gone."""
    os.chdir(root)
    pivot_root(".", ".")           # new root on top, old root stacked beneath it at the same place
    umount2(".", MNT_DETACH)       # detach the old root: no path leads back to the host any more
    os.chdir("/")


def prepare_root(rootfs: str | os.PathLike, tmp_tmpfs: bool = True) -> Path:
    """Steps 1-3 of the sequence: private propagation, the root bound onto itself, /proc, /dev, /sys
    (and a tmpfs /tmp) mounted beneath it. The host's mounts are all still there, above it."""
    root = check_rootfs(rootfs).resolve()
    make_mounts_private()
    mount(str(root), str(root), None, MS_BIND | MS_REC)
    mount_proc(root)
    mount_dev(root)
    mount_sys_readonly(root)
    if tmp_tmpfs:
        mount("tmpfs", str(root / "tmp"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=64m")
    return root


def setup_container_root(rootfs: str | os.PathLike, readonly: bool = True, tmp_tmpfs: bool = True,
                         before_pivot=None) -> None:
    """The whole step 2 sequence; call it inside a new mount (and PID) namespace, e.g. as spawn's setup.
    `before_pivot()`, if given, runs just before pivot_root (step 2's figure reads the mount table there)."""
    root = prepare_root(rootfs, tmp_tmpfs)
    if before_pivot:
        before_pivot()
    enter_root(root)
    if readonly:
        mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY)


def chroot_escape(rootfs: str | os.PathLike, probe: str) -> str | None:
    """The classic chroot escape, run in a forked child that chroot()ed into rootfs.

    chroot changes only the process's root *directory*; a root process can chroot again into a
    subdirectory, leaving its working directory outside the new root, and `..` from there walks up
    to the real root. Returns the content of host file `probe` if the escape worked, None if not.
    """
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_fd)
            os.chroot(rootfs)
            os.chdir("/")
            os.chroot("/bin")        # a new root below us; our working directory stays outside it
            for _ in range(64):      # ...so `..` walks up past the old root to the real /
                os.chdir("..")
            os.chroot(".")
            with open(probe) as f:
                os.write(write_fd, f.read(4096).encode())
        except BaseException:
            pass
        os._exit(0)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 4096):
        chunks.append(chunk)
    os.close(read_fd)
    os.waitpid(child, 0)
    return b"".join(chunks).decode() or None


def mount_points_of(pid: int) -> list[tuple[str, str, str]]:
    """[(mount point, filesystem type, options)] from /proc/<pid>/mountinfo, as the process sees them."""
    result = []
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fields = left.split()
            fstype = right.split()[0]
            result.append((fields[4], fstype, fields[5]))
    return result


def processes_seen_by(pid: int) -> list[tuple[int, str]]:
    """[(pid, command)] as the process sees them, read from *its* /proc (the procfs it mounted)."""
    proc = Path(f"/proc/{pid}/root/proc")
    seen = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            seen.append((int(entry.name), comm))
    return sorted(seen)
