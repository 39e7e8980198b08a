"""Part 2 of mycontainer (step 2): make a directory tree the root filesystem, with pivot_root.

Complete the TODOs (4 is optional); the rest is given. README.md in lab/02-rootfs explains the calls.
"""
import os
import stat

from .libc import MNT_DETACH, MS_BIND, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, mount, pivot_root, umount2

#: The device nodes of a container's /dev (the ones runc creates): name -> (major, minor), see
#: Documentation/admin-guide/devices.txt in the kernel's source, or `ls -l /dev/null` on the host.
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}


def make_mounts_private():
    """Stop mount events from propagating between this mount namespace and the host's."""
    # TODO 1: afterwards, the optional fields of / in /proc/self/mountinfo have no `shared:N` (man 5
    #         proc_pid_mountinfo), for / and every mount below it: a mount made later in this namespace
    #         no longer appears on the host. The call: mount(2) with a propagation flag (man 7
    #         mount_namespaces, "Shared subtrees"); libc.py's mount wrapper takes None for an unused argument.
    pass


def make_mount_point(rootfs):
    """Make `rootfs` a mount point of its own (pivot_root's new root must be one)."""
    # TODO 2: afterwards `rootfs` is a mount point: a line of /proc/self/mountinfo has it in field 5.
    #         pivot_root(2) fails with EINVAL otherwise (man 2 pivot_root, "new_root must be a mount
    #         point"). A directory becomes one by being mounted onto itself: man 2 mount, "Creating a
    #         bind mount" (and think about the mounts below it).
    pass


def mount_proc(rootfs):
    """A procfs at rootfs/proc that shows the PID namespace of the process that mounts it."""
    # TODO 3: afterwards rootfs/proc is a procfs (type proc in /proc/self/mountinfo), and `ps` inside
    #         lists only the processes of the new PID namespace. A procfs shows the PID namespace of the
    #         process that mounts it (man 5 proc, "Overview"; man 7 pid_namespaces, "/proc and PID
    #         namespaces"): this runs in the child, PID 1.
    pass


def mount_dev(rootfs):
    """Optional: rootfs/dev as a small tmpfs holding only the DEVICES, not the host's devtmpfs."""
    # TODO 4 (optional, judged if you do it): afterwards rootfs/dev is a tmpfs (not the host's
    #         devtmpfs) holding exactly the character devices in DEVICES, readable and writable by all.
    #         man 5 tmpfs; mknod(2) (os.mknod, os.makedev; S_IFCHR in the mode); mind the umask.
    pass


def mount_sys(rootfs):
    """Optional: a sysfs at rootfs/sys that nothing inside can write to."""
    # TODO 4 (optional, judged if you do it): afterwards rootfs/sys is a sysfs, and its options in
    #         /proc/self/mountinfo start with `ro`. man 5 sysfs; the read-only flag of mount(2).
    pass


def switch_root(rootfs):
    """Make `rootfs` the root mount of this mount namespace, and detach the old root."""
    # TODO 5: afterwards, in this mount namespace, / is `rootfs`: /proc/self/mountinfo has one line for
    #         / and none for the host's mounts, and a process that setns(2)-joins the namespace sees the
    #         image, not the host (chroot(2) would fool /proc/PID/root, not that). man 2 pivot_root,
    #         NOTES: new_root and put_old may be the same directory, and then the old root is stacked
    #         beneath the new one: detach it (man 2 umount, MNT_DETACH) so no path leads back to the host.
    pass


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
