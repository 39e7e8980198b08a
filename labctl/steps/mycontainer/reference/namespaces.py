"""Part 1 of mycontainer (step 1): a command as PID 1 of new namespaces, with a hostname of its own.

The reference version (`labctl lab take 1` copies it into lab/mycontainer).
"""
import os
import sys
import traceback

from .libc import CLONE_NEWIPC, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUTS, check, libc, setns

#: The namespaces of step 1; step 7 adds CLONE_NEWNET.
NAMESPACES = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID


def enter_new_namespaces(flags):
    """Move this process into new namespaces of the kinds in `flags` (an OR of CLONE_NEW* bits)."""
    check(libc.unshare(flags), "unshare")


def set_hostname(name):
    """Give the UTS namespace this process is in the hostname `name`."""
    raw = name.encode()
    check(libc.sethostname(raw, len(raw)), "sethostname")


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
