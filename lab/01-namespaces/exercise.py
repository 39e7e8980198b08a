#!/usr/bin/env python3
"""Step 1 exercise: start a command in new UTS, PID, IPC and mount namespaces, with its own hostname.

Usage (as root):  python3 exercise.py HOSTNAME COMMAND [ARGS...]
   e.g.           python3 exercise.py box1 sh -c 'hostname; echo my pid is $$'
Judge it with:    labctl check 1

Complete the lines marked TODO. README.md in this folder explains the syscalls.
"""
import ctypes
import os
import sys

libc = ctypes.CDLL("libc.so.6", use_errno=True)

# Flags from <linux/sched.h>: one per kind of namespace.
CLONE_NEWNS = 0x00020000   # mount
CLONE_NEWUTS = 0x04000000  # hostname
CLONE_NEWIPC = 0x08000000  # System V IPC, POSIX message queues
CLONE_NEWPID = 0x20000000  # process IDs


def check(result, what):
    """libc returns -1 on failure and leaves the reason in errno: turn that into an OSError."""
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    hostname, command = sys.argv[1], sys.argv[2:]

    # TODO 1: move this process into new UTS, PID, IPC and mount namespaces.
    #         int unshare(int flags);   combine the four CLONE_NEW* flags above with |
    #         Hint: check(libc.unshare(...), "unshare")

    pid = os.fork()  # after unshare(CLONE_NEWPID), this child is PID 1 of the new PID namespace
    if pid == 0:
        # TODO 2: give the new UTS namespace its own hostname.
        #         int sethostname(const char *name, size_t len);   name as bytes: hostname.encode()

        os.execvp(command[0], command)

    _, status = os.waitpid(pid, 0)  # the parent stays outside and waits, like `unshare --fork` does
    sys.exit(os.waitstatus_to_exitcode(status) % 256)


if __name__ == "__main__":
    main()
