"""Part 9 of mycontainer (step 9): what root inside may still do. Three defences, applied to the process
itself just before it execs the command (runc does the same, in this order):

  1. capabilities: keep only KEEP in the bounding, permitted and effective sets; empty inheritable and
     ambient sets, so that no later execve can get any other capability back
  2. no_new_privs: from now on no execve gives privileges (setuid bits and file capabilities are ignored)
  3. seccomp: a filter that lets through only the system calls in ALLOWED; any other fails with EPERM

The reference: what `labctl lab take 9` puts in lab/mycontainer.
"""
import ctypes
import errno

from .libc import check, libc

#: Docker's default capabilities: what a container's root keeps (capabilities(7) describes each).
KEEP = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
        "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
        "CAP_AUDIT_WRITE")

#: What step 9's workload (busybox sh running echo, cat, ls, wc, rm, date, id, sleep) calls, as step 8's
#: `labctl trace NAME --syscalls` counted it; and what runs between the filter and execve (execve itself).
ALLOWED = ("access", "arch_prctl", "brk", "clock_nanosleep", "clone", "close", "dup2", "execve", "exit",
           "exit_group", "fcntl", "getdents64", "getegid", "geteuid", "getgid", "getgroups", "getpid",
           "getppid", "getrandom", "getuid", "ioctl", "lseek", "mprotect", "newfstatat", "openat", "prctl",
           "prlimit64", "read", "readlink", "rseq", "rt_sigaction", "rt_sigreturn", "sendfile",
           "set_robust_list", "set_tid_address", "uname", "unlink", "wait4", "write")

#: Capability numbers, from <linux/capability.h> (the bit of each in /proc/PID/status's Cap* masks).
CAPABILITIES = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3, "CAP_FSETID": 4,
    "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15, "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19, "CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27, "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31, "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35, "CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38, "CAP_BPF": 39, "CAP_CHECKPOINT_RESTORE": 40,
}

# prctl(2) options, <linux/prctl.h>
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4

# capset(2), <linux/capability.h>: a header, then two data structs (capabilities 0-31, then 32-63)
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def last_capability():
    """The highest capability number the running kernel knows."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def drop_capabilities(keep):
    """Keep only the capabilities named in `keep`, in every set."""
    bits = {CAPABILITIES[name] for name in keep}
    for cap in range(last_capability() + 1):
        if cap not in bits:
            check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"prctl(PR_CAPBSET_DROP, {cap})")
    check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    mask = sum(1 << bit for bit in bits)
    header = CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (CapData * 2)(CapData(mask & 0xFFFFFFFF, mask & 0xFFFFFFFF, 0),
                         CapData(mask >> 32, mask >> 32, 0))
    check(libc.capset(ctypes.byref(header), data), "capset")


def set_no_new_privs():
    """From now on, no execve(2) of this process or its children may gain privileges."""
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


def install_seccomp(allowed):
    """A seccomp filter: the calls in `allowed` run, any other returns EPERM without running."""
    import seccomp
    syscall_filter = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
    for name in allowed:
        syscall_filter.add_rule(seccomp.ALLOW, name)
    syscall_filter.load()


# ---------------------------------------------------------------------------------------------
# Given: the order, the same in the skeleton and the reference.

def apply(keep=KEEP, allowed=ALLOWED, no_new_privs=True):
    """The three defences, as runc applies them just before execve: capabilities first (dropping the
    bounding set needs CAP_SETPCAP), then no_new_privs, then the filter (after it, only `allowed` calls
    work: nothing else may come between it and execve)."""
    drop_capabilities(keep)
    if no_new_privs:
        set_no_new_privs()
    install_seccomp(allowed)
