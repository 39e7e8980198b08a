"""Capabilities: root's power cut into 41 pieces, and the 14 of them a container keeps (capabilities(7)).

Since Linux 2.2 the kernel does not ask "is this process root?" but "does it hold CAP_X in its effective
set?": CAP_SYS_ADMIN for mount(2), CAP_MKNOD for mknod(2), CAP_SYS_MODULE for init_module(2), ... Each
process carries five sets, each a 64-bit mask (bit N = capability N), shown in /proc/PID/status:
  CapBnd  bounding     the most it, and anything it execs, can ever gain: dropped bits never come back
  CapPrm  permitted    what it may raise into its effective set
  CapEff  effective    what the kernel checks
  CapInh  inheritable  what survives an execve of a program whose file has the same inheritable bits
  CapAmb  ambient      what survives an execve of any (non-setuid) program, even as a non-root user

Docker keeps DEFAULT below (moby's oci/caps/defaults.go); --cap-add/--cap-drop change it, --privileged
keeps all. PID 1 applies the set just before execve, as runc's init does (finalizeNamespace):
  1. drop every other capability from the bounding set   prctl(PR_CAPBSET_DROP, N)
  2. keep the permitted set across the change of user    prctl(PR_SET_KEEPCAPS, 1)   (then setuid)
  3. set permitted and effective to the set              capset(2), _LINUX_CAPABILITY_VERSION_3
  4. clear the ambient set                               prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)

Inheritable is left EMPTY, although Docker once filled it too: CVE-2022-24769 (fixed in moby 20.10.14
and runc 1.1.2) showed that a non-root process with a full inheritable set gains those capabilities by
executing any program whose file carries them in its inheritable bits (setcap cap_net_admin+ei), which
the image author may have planted. Empty inheritable closes that path; nothing legitimate relied on it.

A non-root user (-u 1000) gets the same bounding set, and PID 1 sets the same permitted and effective
sets before execve, as runc does; then the kernel's execve rule empties them: a process whose uid is not
0 keeps at execve only (file permitted & bounding) | (inheritable & file inheritable) | ambient, and
ambient and inheritable are empty. So, as with Docker today, `-u 1000` runs with CapPrm and CapEff 0 and
CapBnd = the set: a setuid-root program can still raise the bounding set's capabilities
(no-new-privileges stops that).
"""
from __future__ import annotations

from labctl.errors import LabError
from labctl.kernel.syscalls import (PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, PR_CAPBSET_DROP, PR_SET_KEEPCAPS,
                                    capset, prctl)

#: The kernel's capabilities, by number (<linux/capability.h>): NAMES[N] is capability N.
NAMES = tuple("CAP_" + name for name in (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL",
    "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ",
    "PERFMON", "BPF", "CHECKPOINT_RESTORE"))

#: Docker's default set, in moby's order (labctl run --help lists it too: client/containers.py).
DEFAULT = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
           "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
           "CAP_KILL", "CAP_AUDIT_WRITE")


def last_cap() -> int:
    """The highest capability number the running kernel knows (/proc/sys/kernel/cap_last_cap)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(NAMES) - 1


def held() -> int:
    """The effective set of this process (labctl, as root) from /proc/self/status: what it can hand on."""
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("CapEff:")).split()[1], 16)


def available() -> list[str]:
    """Every capability this kernel has and labctl holds (as Docker: those of the current environment,
    which in a container or a restricted sandbox may be fewer): what --privileged and --cap-add ALL give."""
    mask = held()
    return [name for number, name in enumerate(NAMES[:last_cap() + 1]) if mask >> number & 1]


def normalize(name: str) -> str:
    """"net_admin" | "NET_ADMIN" | "CAP_NET_ADMIN" -> "CAP_NET_ADMIN" (and "all" -> "ALL"), as Docker;
    LabError for a name capabilities(7) does not have."""
    upper = name.strip().upper()
    if upper == "ALL":
        return upper
    full = upper if upper.startswith("CAP_") else "CAP_" + upper
    if full not in NAMES:
        raise LabError(f"unknown capability {full!r}",
                       "use a name of capabilities(7), e.g. --cap-add NET_ADMIN (`labctl run --help` lists them)")
    if full not in available():
        raise LabError(f"capability {full!r} is not supported by this kernel or not held by labctl here",
                       "leave it out (`grep Cap /proc/self/status` shows what this environment has)")
    return full


def resolve(cap_add: list[str] = (), cap_drop: list[str] = (), privileged: bool = False) -> list[str]:
    """The container's capability set, by Docker's rules (moby's caps.TweakCapabilities):
    --privileged: all; --cap-add ALL: all but those dropped; --cap-drop ALL: only those added;
    else DEFAULT minus the dropped plus the added. In the kernel's order, without duplicates."""
    adds, drops = [normalize(c) for c in cap_add], [normalize(c) for c in cap_drop]
    if privileged:
        chosen = available()
    elif "ALL" in adds:
        chosen = [c for c in available() if c not in drops]
    elif "ALL" in drops:
        chosen = adds
    else:
        chosen = [c for c in DEFAULT if c not in drops] + adds
    return [c for c in NAMES if c in chosen]


def to_mask(names: list[str]) -> int:
    """["CAP_CHOWN", "CAP_KILL"] -> 0x21: bit N set for capability N."""
    return sum(1 << NAMES.index(name) for name in set(names))


def from_mask(mask: int | str) -> list[str]:
    """0x21 or "0000000000000021" (as /proc/PID/status prints CapEff) -> ["CAP_CHOWN", "CAP_KILL"]."""
    mask = int(mask, 16) if isinstance(mask, str) else mask
    return [NAMES[n] if n < len(NAMES) else f"CAP_{n}" for n in range(64) if mask >> n & 1]


def drop_bounding(keep: list[str]) -> None:
    """Step 1 (needs CAP_SETPCAP): remove every other capability from the bounding set, for good."""
    kept = {NAMES.index(name) for name in keep}
    for number in range(last_cap() + 1):
        if number not in kept:
            prctl(PR_CAPBSET_DROP, number)


def keep_across_setuid() -> None:
    """Step 2: PR_SET_KEEPCAPS, so that setuid(2) to a non-root uid leaves the permitted set as it is
    (the kernel would otherwise empty it); capset then sets it to exactly what the container keeps."""
    prctl(PR_SET_KEEPCAPS, 1)


def apply(names: list[str]) -> None:
    """Steps 3 and 4, after the change of user: permitted = effective = names, inheritable empty (the
    module docstring says why), ambient empty; PR_SET_KEEPCAPS off again (runc's ClearKeepCaps)."""
    prctl(PR_SET_KEEPCAPS, 0)
    mask = to_mask(names)
    capset(effective=mask, permitted=mask, inheritable=0)
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


PR_CAP_AMBIENT_RAISE = 2


def apply_sets(effective: list[str], permitted: list[str], inheritable: list[str], ambient: list[str]) -> None:
    """An OCI config.json's sets, each as given (step 10): capset(2) for the first three, then each
    ambient capability raised (the kernel wants it in permitted and inheritable already)."""
    prctl(PR_SET_KEEPCAPS, 0)
    capset(effective=to_mask(effective), permitted=to_mask(permitted), inheritable=to_mask(inheritable))
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    for name in ambient:
        if name in permitted and name in inheritable:   # the kernel's rule; runc, too, skips the others
            prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, NAMES.index(name))
