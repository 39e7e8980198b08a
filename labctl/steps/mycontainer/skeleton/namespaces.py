"""Part 1 of mycontainer (step 1): a command as PID 1 of new namespaces, with a hostname of its own.

Complete the two TODOs; the rest is given. README.md in lab/01-namespaces explains the calls.
"""
import os
import sys
import traceback

from .libc import CLONE_NEWIPC, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUTS, check, libc, setns

#: The namespaces of step 1; step 7 adds CLONE_NEWNET.
NAMESPACES = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID


def enter_new_namespaces(flags):
    """Move this process into new namespaces of the kinds in `flags` (an OR of CLONE_NEW* bits)."""
    # TODO 1: afterwards /proc/self/ns/uts, ipc and mnt name namespaces other than the host's (compare
    #         the inode numbers with /proc/1/ns/...), and the NEXT child this process forks is PID 1 of a
    #         new PID namespace. The system call: unshare(2) (man 2 unshare says what each CLONE_NEW*
    #         flag does, and why CLONE_NEWPID applies to children only). libc.py gives you `libc` and
    #         `check`, which turns a -1 into an OSError naming errno.
    pass


def set_hostname(name):
    """Give the UTS namespace this process is in the hostname `name`."""
    # TODO 2: afterwards `hostname` run in this namespace prints `name`, and the host's hostname is
    #         unchanged. The system call: sethostname(2) (man 2 sethostname). It takes a char pointer
    #         and a length: what does ctypes pass for a Python str, and what for bytes? (ctypes docs,
    #         "Fundamental data types").
    pass


# ---------------------------------------------------------------------------------------------
# Given: the same in the skeleton and the reference.

def spawn(command, hostname=None, flags=NAMESPACES, setup=None):
    """Run `command` in new namespaces (`flags`); return its exit status, 128+N if signal N killed it.

    The parent calls enter_new_namespaces, then forks: the child is PID 1 of the new PID namespace.
    In the child, in this order: set_hostname(hostname) if given, setup() if given (the later parts:
    join a cgroup, build a root filesystem), then execvp(command). The parent goes back to the host's
    mount namespace (setns(2)): the container's pivot_root must not take the parent's / along.
    """
    outside = os.open("/proc/self/ns/mnt", os.O_RDONLY)
    enter_new_namespaces(flags)
    moved = os.stat("/proc/self/ns/mnt").st_ino != os.fstat(outside).st_ino
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        _child(command, hostname, setup, refuse_mounts=bool(flags & CLONE_NEWNS) and not moved)
    if moved:
        setns(outside, CLONE_NEWNS)
    os.close(outside)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _child(command, hostname, setup, refuse_mounts):
    """The child's side of spawn: it never returns (exec, or exit 127 with the reason on stderr)."""
    try:
        if hostname is not None:
            set_hostname(hostname)
        if setup is not None:
            if refuse_mounts:
                raise SystemExit("mycontainer: still in the host's mount namespace: enter_new_namespaces "
                                 "(namespaces.py, step 1) must make a new one before any mount is changed")
            setup()
        os.execvp(command[0], command)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    sys.stderr.flush()
    os._exit(127)
