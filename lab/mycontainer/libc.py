"""Given (not a part): the C library through ctypes, the constants, and thin wrappers for the
system calls Python's os module lacks. Each wrapper raises OSError(errno) when the call returns -1,
as os functions do: a failed mount says "mount /x/proc: No such file or directory", not nothing.

The constants come from the kernel's headers: <linux/sched.h> (CLONE_*), <linux/mount.h> (MS_*, MNT_*).
"""
import ctypes
import os

libc = ctypes.CDLL("libc.so.6", use_errno=True)

# Namespaces, <linux/sched.h>: one flag per kind (unshare(2), setns(2), clone(2)).
CLONE_NEWNS = 0x00020000    # mount
CLONE_NEWUTS = 0x04000000   # hostname
CLONE_NEWIPC = 0x08000000   # System V IPC, POSIX message queues
CLONE_NEWPID = 0x20000000   # process IDs
CLONE_NEWNET = 0x40000000   # network

# mount(2) flags, <linux/mount.h>.
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 1 << 18
MNT_DETACH = 0x2            # umount2(2): detach now, free once nothing uses it

SYS_pivot_root = 155        # x86_64: glibc has no pivot_root() wrapper, so call the syscall by number


def check(result, what):
    """libc returns -1 on failure and leaves the reason in errno: turn that into an OSError."""
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _bytes(s):
    return s.encode() if isinstance(s, str) else s


def mount(source, target, fstype, flags=0, data=None):
    """int mount(const char *source, const char *target, const char *fstype, unsigned long flags,
    const void *data): man 2 mount. Strings or None."""
    check(libc.mount(_bytes(source), _bytes(str(target)), _bytes(fstype), ctypes.c_ulong(flags), _bytes(data)),
          f"mount {target}")


def umount2(target, flags=0):
    """int umount2(const char *target, int flags): man 2 umount."""
    check(libc.umount2(_bytes(str(target)), flags), f"umount2 {target}")


def pivot_root(new_root, put_old):
    """int pivot_root(const char *new_root, const char *put_old): man 2 pivot_root."""
    check(libc.syscall(SYS_pivot_root, _bytes(str(new_root)), _bytes(str(put_old))), "pivot_root")


def setns(fd, nstype):
    """int setns(int fd, int nstype): join the namespace an open /proc/PID/ns/KIND file names."""
    check(libc.setns(fd, nstype), "setns")
