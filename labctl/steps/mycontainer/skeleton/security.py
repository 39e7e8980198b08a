"""Part 9 of mycontainer (step 9): what root inside may still do. Three defences, applied to the process
itself just before it execs the command (runc does the same, in this order):

  1. capabilities: keep only KEEP in the bounding, permitted and effective sets; empty inheritable and
     ambient sets, so that no later execve can get any other capability back
  2. no_new_privs: from now on no execve gives privileges (setuid bits and file capabilities are ignored)
  3. seccomp: a filter that lets through only the system calls in ALLOWED; any other fails with EPERM

Complete the three TODOs, and choose ALLOWED (TODO 4). README.md in lab/09-security explains each defence
and the attack it stops.
"""
import ctypes
import errno

from .libc import check, libc

#: Docker's default capabilities: what a container's root keeps (capabilities(7) describes each).
KEEP = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
        "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
        "CAP_AUDIT_WRITE")

# TODO 4: the system calls the workload needs, and no other. Do not guess: run the workload in a lab
#         container and count its calls with step 8's tracer (README.md, "Choosing the allowlist"). A call
#         you leave out makes the workload fail with EPERM; `labctl trace NAME --denied` shows which.
ALLOWED = ("execve", "exit_group")

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
    # TODO 1: afterwards /proc/self/status shows CapBnd, CapPrm and CapEff with exactly the bits of `keep`
    #         (CAPABILITIES gives each bit) and CapInh, CapAmb zero. Three steps, in this order:
    #         - the bounding set: one prctl(2) call per capability to drop, up to the number last_capability returns
    #           (man 2 prctl, PR_CAPBSET_DROP; it needs CAP_SETPCAP, so do it while you still have that);
    #         - the ambient set: prctl(2) PR_CAP_AMBIENT with PR_CAP_AMBIENT_CLEAR_ALL;
    #         - permitted, effective and inheritable: one capset(2) call (man 2 capset: a CapHeader with
    #           _LINUX_CAPABILITY_VERSION_3 and pid 0, and an array of two CapData: capabilities 0-31 in
    #           the first, 32-63 in the second).
    #         libc.prctl and libc.capset exist; libc.py's check turns -1 into an OSError with errno.
    pass


def set_no_new_privs():
    """From now on, no execve(2) of this process or its children may gain privileges."""
    # TODO 2: afterwards /proc/self/status says NoNewPrivs: 1. man 2 prctl, PR_SET_NO_NEW_PRIVS (and the
    #         kernel's Documentation/userspace-api/no_new_privs.rst on what it changes for setuid files).
    pass


def install_seccomp(allowed):
    """A seccomp filter: the calls in `allowed` run, any other returns EPERM without running."""
    # TODO 3: afterwards /proc/self/status says Seccomp: 2 (filter mode) and a call outside `allowed`
    #         fails with EPERM. Use libseccomp's Python binding (`import seccomp`, Debian's python3-seccomp;
    #         man 3 seccomp_init, seccomp_rule_add, seccomp_load say what each step does): a filter whose
    #         default action is an errno, one rule per allowed call, then load it. Loading needs
    #         no_new_privs (TODO 2) or CAP_SYS_ADMIN: that is why it comes last.
    pass


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
