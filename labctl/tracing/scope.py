"""Which container a tracer watches: a PID (or a container's name) -> its PID namespace, and the C
test every BPF program runs to tell whether the current task is in it.

A container is, first of all, a PID namespace. The helper bpf_get_ns_current_pid_tgid(dev, ino, ...)
succeeds only when the current task lives in the PID namespace whose nsfs file (/proc/<pid>/ns/pid)
has that device and inode, and then tells the task's PID *inside* it. No kernel struct is read, so the
program does not depend on the layout of task_struct (the headers linked on this machine are 6.1's,
the kernel is newer). On cgroup v2 the scope can also require a cgroup id (bpf_get_current_cgroup_id),
which is the inode of the cgroup's directory in the cgroup2 file system.

The scope lives in a BPF map written after the program is loaded (Tracer.set_scopes): one compiled
program can watch up to MAX_SCOPES containers side by side, or be pointed at another container
without compiling again.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable

from labctl.errors import LabError

MAX_SCOPES = 4

# The scope test every tracer includes. bcc compiles this C with clang when the Python object is made.
SCOPE_C = r"""
#define MAX_SCOPES %(max_scopes)d
/* One watched container: its PID namespace (device and inode of /proc/PID/ns/pid), and on cgroup v2
 * optionally its cgroup id. Python fills this map after loading; a zero entry is unused. */
struct scope_t {
    u64 pidns_dev;
    u64 pidns_ino;
    u64 cgroup_id;
};
BPF_ARRAY(scopes, struct scope_t, MAX_SCOPES);

/* Which watched container the current task belongs to (its slot), or -1 for none.
 * On success ns->pid and ns->tgid are the task's thread and process IDs inside the container. */
static __always_inline int scope_slot(struct bpf_pidns_info *ns)
{
    #pragma unroll
    for (int i = 0; i < MAX_SCOPES; i++) {
        int key = i;
        struct scope_t *s = scopes.lookup(&key);
        if (!s || (s->pidns_ino == 0 && s->cgroup_id == 0))
            continue;
        if (s->cgroup_id && bpf_get_current_cgroup_id() != s->cgroup_id)
            continue;
        if (s->pidns_ino == 0)
            return i;                      /* scoped by cgroup only */
        /* 0 only when the task's own PID namespace is this one: no struct offsets needed */
        if (bpf_get_ns_current_pid_tgid(s->pidns_dev, s->pidns_ino, ns, sizeof(*ns)) == 0)
            return i;
    }
    return -1;
}
""" % {"max_scopes": MAX_SCOPES}


@dataclass(frozen=True)
class Scope:
    """One container, as the BPF programs recognise it."""
    pid: int                 # a process of the container, as the host sees it
    pidns_dev: int           # st_dev of /proc/<pid>/ns/pid (the nsfs device)
    pidns_ino: int           # st_ino of /proc/<pid>/ns/pid: the PID namespace's inode
    cgroup_id: int = 0       # on cgroup v2: the inode of its cgroup directory; 0 = any cgroup
    label: str = ""

    @classmethod
    def of_pid(cls, pid: int, by_cgroup: bool = False, label: str = "", allow_host: bool = False) -> "Scope":
        """The scope of the container that process `pid` is in (stat(2) of /proc/<pid>/ns/pid)."""
        try:
            st = os.stat(f"/proc/{pid}/ns/pid")
        except FileNotFoundError:
            raise LabError(f"no process {pid}", "give the host PID of a process in the container "
                           "(`labctl run` prints it; `ps -e -o pid,pidns,cmd` lists them)") from None
        except OSError as exc:
            raise LabError(f"cannot read /proc/{pid}/ns/pid: {exc.strerror}",
                           "give the PID of a process the lab started, and run as root") from None
        if not allow_host and st.st_ino == os.stat("/proc/self/ns/pid").st_ino:
            raise LabError(f"PID {pid} is in the host's PID namespace, not in a container",
                           "give the PID of the container's PID 1 or a process inside it "
                           "(`ps -e -o pid,pidns,cmd` shows each process's PID namespace)")
        cgroup_id = cgroup_v2_id(pid) if by_cgroup else 0
        return cls(pid, st.st_dev, st.st_ino, cgroup_id, label or f"pid {pid}")

    def member_pids(self) -> list[int]:
        """Host PIDs of the processes in this PID namespace now (what the kernel side sees as ours)."""
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if os.stat(f"/proc/{entry}/ns/pid").st_ino == self.pidns_ino:
                        pids.append(int(entry))
        return sorted(pids)

    def still_running(self) -> bool:
        """Is process `pid` still in this PID namespace? When PID 1 exits, the container is gone."""
        try:
            return os.stat(f"/proc/{self.pid}/ns/pid").st_ino == self.pidns_ino
        except OSError:
            return False


def cgroup2_mount() -> str | None:
    """Where the cgroup2 file system is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            if right.split()[0] == "cgroup2":
                return left.split()[4]
    return None


def cgroup_v2_id(pid: int) -> int:
    """The cgroup id bpf_get_current_cgroup_id() returns for `pid`: the inode of its cgroup2 directory."""
    mount = cgroup2_mount()
    if mount is None:
        raise LabError("this machine has no cgroup2 file system: a cgroup id scope needs cgroup v2",
                       "scope by PID namespace only (drop --cgroup)")
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return os.stat(mount + line[3:].strip()).st_ino
    raise LabError(f"PID {pid} has no cgroup v2 entry in /proc/{pid}/cgroup", "drop --cgroup")


#: Lookups from a container name to a host PID, tried in order. Step 7 (`labctl run`) registers one.
RESOLVERS: list[Callable[[str], int | None]] = []


def register_resolver(lookup: Callable[[str], int | None]) -> None:
    """Add a name -> PID lookup (returns None when it does not know the name)."""
    if lookup not in RESOLVERS:
        RESOLVERS.append(lookup)


def _container_module_resolver(name: str) -> int | None:
    """Step 7's containers (`labctl run --name NAME`), when that package is there:
    labctl.containers.store.find(name).pid. None when it is absent or does not know the name."""
    import importlib
    try:
        store = importlib.import_module("labctl.containers.store")
    except ImportError:
        return None
    try:
        return store.find(name).pid
    except LabError:
        return None


def resolve_container(spec: str | int) -> int:
    """A container given as a host PID, or as a name one of RESOLVERS knows; returns a host PID."""
    text = str(spec)
    if text.isdigit():
        return int(text)
    for lookup in RESOLVERS + [_container_module_resolver]:
        pid = lookup(text)
        if pid:
            return int(pid)
    raise LabError(f"no container named {text!r}",
                   "give the host PID of a process in the container (`labctl run` prints it)")
