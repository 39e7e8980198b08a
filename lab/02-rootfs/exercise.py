#!/usr/bin/env python3
"""Step 2 exercise: run a command with ROOTFS as its root filesystem, using pivot_root.

Usage (as root):  python3 exercise.py ROOTFS COMMAND [ARGS...]
   e.g.           python3 exercise.py /var/lib/labctl/rootfs/busybox-v1 sh -c 'ps; mount; ls /'
Judge it with:    labctl check 2

The namespaces are done for you (that was step 1). Complete the lines marked TODO.
README.md in this folder explains each syscall.
"""
import ctypes
import os
import sys

libc = ctypes.CDLL("libc.so.6", use_errno=True)

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID = 0x00020000, 0x04000000, 0x08000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 1 << 18
MNT_DETACH = 0x2
SYS_pivot_root = 155  # x86_64: glibc has no pivot_root() wrapper, so call the syscall by number


def check(result, what):
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source, target, fstype, flags=0, data=None):
    """int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const void *data)"""
    enc = lambda s: s.encode() if s is not None else None
    check(libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def umount2(target, flags):
    check(libc.umount2(target.encode(), flags), f"umount2 {target}")


def pivot_root(new_root, put_old):
    check(libc.syscall(SYS_pivot_root, new_root.encode(), put_old.encode()), "pivot_root")


def setup_root(rootfs):
    """Runs in the child (PID 1 of the new PID namespace, in the new mount namespace)."""
    # TODO 1: stop our mounts from propagating back to the host:
    #         mount(None, "/", None, MS_REC | MS_PRIVATE)

    # TODO 2: pivot_root needs the new root to be a mount point: bind-mount rootfs onto itself
    #         (MS_BIND | MS_REC).

    # TODO 3: mount a procfs at rootfs + "/proc" (source "proc", type "proc"), so `ps` inside sees
    #         only this PID namespace.

    # TODO 4 (optional, checked if you do it): a tmpfs on rootfs + "/dev" with os.mknod for null (1,3),
    #         zero (1,5), random (1,8), urandom (1,9); sysfs on rootfs + "/sys" with MS_RDONLY.

    # TODO 5: switch roots and drop the old one:
    #         os.chdir(rootfs); pivot_root(".", "."); umount2(".", MNT_DETACH); os.chdir("/")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rootfs, command = os.path.abspath(sys.argv[1]), sys.argv[2:]
    check(libc.unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID), "unshare")
    pid = os.fork()
    if pid == 0:
        setup_root(rootfs)
        os.execvp(command[0], command)
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status) % 256)


if __name__ == "__main__":
    main()
