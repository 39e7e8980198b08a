"""Part 2 of mycontainer (step 2): make a directory tree the root filesystem, with pivot_root.

The reference version (`labctl lab take 2` copies it into lab/mycontainer).
"""
import os
import stat

from .libc import MNT_DETACH, MS_BIND, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, mount, pivot_root, umount2

#: The device nodes of a container's /dev (the ones runc creates): name -> (major, minor), see
#: Documentation/admin-guide/devices.txt in the kernel's source, or `ls -l /dev/null` on the host.
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}


def make_mounts_private():
    """Stop mount events from propagating between this mount namespace and the host's."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)


def make_mount_point(rootfs):
    """Make `rootfs` a mount point of its own (pivot_root's new root must be one)."""
    mount(rootfs, rootfs, None, MS_BIND | MS_REC)


def mount_proc(rootfs):
    """A procfs at rootfs/proc that shows the PID namespace of the process that mounts it."""
    mount("proc", os.path.join(rootfs, "proc"), "proc", MS_NOSUID | MS_NOEXEC)


def mount_dev(rootfs):
    """Optional: rootfs/dev as a small tmpfs holding only the DEVICES, not the host's devtmpfs."""
    dev = os.path.join(rootfs, "dev")
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k")
    for name, (major, minor) in DEVICES.items():
        os.mknod(os.path.join(dev, name), 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(os.path.join(dev, name), 0o666)   # mknod's mode is filtered by the umask


def mount_sys(rootfs):
    """Optional: a sysfs at rootfs/sys that nothing inside can write to."""
    mount("sysfs", os.path.join(rootfs, "sys"), "sysfs", MS_RDONLY | MS_NOSUID | MS_NOEXEC)


def switch_root(rootfs):
    """Make `rootfs` the root mount of this mount namespace, and detach the old root."""
    os.chdir(rootfs)
    pivot_root(".", ".")
    umount2(".", MNT_DETACH)
    os.chdir("/")


# ---------------------------------------------------------------------------------------------
# Given: the same in the skeleton and the reference.

def enter_root(rootfs):
    """The whole sequence, in the order it must run; call it in the child, inside new mount and PID
    namespaces (namespaces.spawn's `setup`): afterwards the process's / is `rootfs`."""
    rootfs = os.path.abspath(rootfs)
    make_mounts_private()
    make_mount_point(rootfs)
    mount_proc(rootfs)
    mount_dev(rootfs)
    mount_sys(rootfs)
    switch_root(rootfs)
