"""--userns remap: root in the container is an unprivileged range of the host's ids (user_namespaces(7)).

Without it, uid 0 inside *is* uid 0 of the host: whatever the other defences miss (a capability left,
a file bind-mounted in, a kernel bug) is done by the host's root. A user namespace maps ids:

    /proc/PID/uid_map:   0  100000  65536     uid 0..65535 inside are 100000..165535 on the host

so the container's root is uid 100000 to the kernel: a host file it does not own and cannot read as
"other" stays closed (it shows as nobody, 65534, and CAP_DAC_OVERRIDE counts only over files whose
owner is mapped), and what it creates on a volume is owned by 100000 on the host. The range comes
from /etc/subuid and /etc/subgid (subuid(5)), entry `labctl` (vagrant/provision.sh adds
labctl:100000:65536, as Docker's daemon adds `dockremap`).

The image's files: the layers are files owned by uid 0 on the host's disk, and uid 0 is not mapped,
so root inside would see its own /bin as nobody's. Two ways out:

  chown a copy   Docker's userns-remap (2016) unpacks every layer a second time, every owner shifted by
                 100000 (/var/lib/docker/100000.100000/), per range: the disk cost and the unpack time of
                 every image twice. There was no other way: a mount could not translate owners.
  idmapped mounts  Linux 5.12 (2021): mount_setattr(2) with MOUNT_ATTR_IDMAP and a user namespace makes a
                 mount that shows every owner through that namespace's maps: the layer, unchanged on
                 disk, reads as owned by 100000 on the host, so by 0 inside. OverlayFS accepts idmapped
                 lower layers since 5.19 (2022): only then could an overlay root use them, which is why
                 Docker's userns-remap still chowns, while containerd 2 and Podman idmap the layers
                 where the kernel allows. This is what labctl does (kernel/overlay.py): no layer is
                 copied or chowned, and the layers stay shared with every other container.

The user namespace for those mounts is made as containerd makes it: a child process unshares
CLONE_NEWUSER and waits; its parent (host root) writes the child's uid_map and gid_map, opens
/proc/CHILD/ns/user, then kills and reaps the child. The open descriptor keeps the namespace alive, and
it is the container's too: PID 1 joins it with setns(2) (runtime/ociinit.py), so the layers and the process
see the very same maps.

When PID 1 joins it is the lesson's other half. PID 1 does all its set-up as the host's root (the
mounts, /proc of its PID namespace, pivot_root), then setns(2)s into the user namespace, last, and
becomes uid 0 there (100000 on the host). Its UTS, IPC, mount, network, PID and time namespaces were
made before, so they belong to the host's user namespace: root inside holds capabilities only in its
own, so it cannot change the hostname, configure the network or mount anything. That is more closed
than runc, which makes the user namespace first and every other one inside it (its root may then
sethostname or mount a tmpfs, given CAP_SYS_ADMIN); the price of runc's order is that proc and sysfs
are mounted from inside, which the kernel allows only over a PID (network) namespace owned by that
user namespace, and only when the host's proc (sysfs) is fully visible, nothing over-mounted.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from labctl.errors import LabError
from labctl.kernel.syscalls import CLONE_NEWUSER, unshare

SUBUID, SUBGID = "/etc/subuid", "/etc/subgid"
ENTRY = "labctl"    # the name whose range labctl uses, as Docker's is "dockremap"
SIZE = 65536        # ids 0..65535 inside: root, the system users, nobody (65534)
MODES = ("host", "remap")


@dataclass
class IdMap:
    """One line of /proc/PID/uid_map or gid_map: `inside` and the `count` ids after it are `outside`.. on the host."""
    inside: int
    outside: int
    count: int


def resolve(mode: str) -> tuple[list[IdMap], list[IdMap]]:
    """--userns MODE -> (uid_map, gid_map): none for "host", [0, 65536) onto the labctl range for "remap".
    A range that is missing or too small is one LabError naming the file and the line to add."""
    if mode == "host":
        return [], []
    if mode != "remap":
        raise LabError(f"unknown --userns mode {mode!r}", "give --userns host or --userns remap")
    return [IdMap(0, subordinate_range(SUBUID), SIZE)], [IdMap(0, subordinate_range(SUBGID), SIZE)]


def subordinate_range(path: str, name: str = ENTRY) -> int:
    """The first id of `name`'s range of at least SIZE ids in `path` (lines NAME:START:COUNT, subuid(5))."""
    fix = f"add `{name}:100000:{SIZE}` to {path} (subuid(5)), as vagrant/provision.sh does"
    try:
        with open(path) as f:
            lines = [line.strip().split(":") for line in f if line.strip() and not line.startswith("#")]
    except FileNotFoundError:
        raise LabError(f"--userns remap needs {path}, and there is none", fix) from None
    ranges = [(int(start), int(count)) for entry, start, count in (l for l in lines if len(l) == 3)
              if entry == name and start.isdigit() and count.isdigit()]
    if not ranges:
        raise LabError(f"--userns remap: {path} has no range for {name}", fix)
    for start, count in ranges:
        if count >= SIZE and start > 0:
            return start
    start, count = ranges[0]
    raise LabError(f"--userns remap: the range of {name} in {path} ({start}:{count}) is too small: "
                   f"it needs {SIZE} ids, not starting at 0", fix)


def host_root(uid_map: list[IdMap], gid_map: list[IdMap]) -> tuple[int, int] | None:
    """The host's (uid, gid) of root inside, or None without a user namespace."""
    if not uid_map:
        return None
    return _outside(uid_map, 0), _outside(gid_map, 0)


def _outside(idmap: list[IdMap], inside: int) -> int:
    for m in idmap:
        if m.inside <= inside < m.inside + m.count:
            return m.outside + inside - m.inside
    raise LabError(f"id {inside} is not mapped", "map [0, 65536) with --userns remap")


def map_lines(idmap: list[IdMap]) -> str:
    """The text of /proc/PID/uid_map (or gid_map) for these maps."""
    return "".join(f"{m.inside} {m.outside} {m.count}\n" for m in idmap)


def new_user_namespace(uid_map: list[IdMap], gid_map: list[IdMap]) -> int:
    """A user namespace with these maps, as an open /proc/PID/ns/user (O_CLOEXEC): see the docstring.
    The caller closes it; the namespace lives as long as a descriptor, a process or a mount uses it."""
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(ready_r)
            os.close(hold_w)
            unshare(CLONE_NEWUSER)   # (a forked child has one thread, as unshare(CLONE_NEWUSER) requires)
            os.write(ready_w, b"u")
            os.read(hold_r, 1)       # until killed, or EOF if labctl dies first
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(hold_r)
    try:
        if os.read(ready_r, 1) != b"u":
            raise LabError("could not make a user namespace (unshare(CLONE_NEWUSER) failed)",
                           "check user.max_user_namespaces (sysctl) and `labctl doctor`")
        for name, idmap in (("uid_map", uid_map), ("gid_map", gid_map)):
            with open(f"/proc/{child}/{name}", "w") as f:   # one write(2): the kernel takes the map whole
                f.write(map_lines(idmap))
        return os.open(f"/proc/{child}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(hold_w)
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


def read_maps(pid: int) -> dict[str, str]:
    """What the kernel says now: /proc/PID/uid_map and gid_map (for `labctl inspect`)."""
    out = {}
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}") as f:
            out[name] = [" ".join(line.split()) for line in f]
    return out
