"""OOM kills in one container, like bcc's oomkill: which process the kernel chose to kill.

    labctl trace 4242 --oom
    TIME(s)  PID    NSPID  COMM             EVENT
       3.201 4260   7      dd               OOM-killed (memory limit of its cgroup reached)

oom:mark_victim runs in the task that needed memory, which is not always the victim, and gives
only the victim's PID (newer kernels add more fields; 6.1 has just the PID). So the program keeps a
map of the containers' processes, filled as they fork and exec and seeded by Python with the ones
already running, and reports a victim found in it, with the name it had.
"""
from __future__ import annotations

import ctypes

from labctl.tracing.tracer import Tracer

PROGRAM = r"""
struct member_t {
    s32 slot;
    u32 nspid;
    char comm[16];
};
struct event_t {
    u64 ts;
    s32 slot;
    u32 pid;            /* the victim's host PID */
    u32 nspid;
    u32 killer;         /* the task that ran out of memory (often the victim itself) */
    char comm[16];
};
BPF_RINGBUF_OUTPUT(events, 16);
BPF_HASH(members, u32, struct member_t, 8192);   /* host PID -> watched process */

static __always_inline void remember_current(u32 pid, int is_child)
{
    struct bpf_pidns_info ns = {};
    int slot = scope_slot(&ns);
    if (slot < 0)
        return;
    /* a new child's PID inside is not known here (ns is the parent's): 0 until it execs */
    struct member_t m = {.slot = slot, .nspid = is_child ? 0 : ns.tgid};
    bpf_get_current_comm(&m.comm, sizeof(m.comm));
    members.update(&pid, &m);
}

int lab_oom_fork(struct tracepoint__sched__sched_process_fork *args)
{
    remember_current(args->child_pid, 1);   /* the child starts as a copy of the parent */
    return 0;
}

int lab_oom_exec(struct tracepoint__sched__sched_process_exec *args)
{
    remember_current(args->pid, 0);         /* a new name */
    return 0;
}

int lab_oom_exit(struct tracepoint__sched__sched_process_exit *args)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 pid = id >> 32;
    if (pid == (u32)id)
        members.delete(&pid);
    return 0;
}

int lab_oom_victim(struct tracepoint__oom__mark_victim *args)
{
    u32 pid = args->pid;
    struct member_t *m = members.lookup(&pid);
    if (!m)
        return 0;
    struct event_t *e = events.ringbuf_reserve(sizeof(struct event_t));
    if (!e)
        return 0;
    e->ts = bpf_ktime_get_ns();
    e->slot = m->slot;
    e->pid = pid;
    e->nspid = m->nspid;
    e->killer = bpf_get_current_pid_tgid() >> 32;
    if (e->killer == pid) {              /* the victim is asking for memory itself: its name now */
        struct bpf_pidns_info ns = {};
        if (scope_slot(&ns) >= 0)
            e->nspid = ns.tgid;
        bpf_get_current_comm(&e->comm, sizeof(e->comm));
    } else                                /* the name it had at its last fork or exec */
        __builtin_memcpy(e->comm, m->comm, sizeof(e->comm));
    events.ringbuf_submit(e, 0);
    return 0;
}
"""


class OomTracer(Tracer):
    """OOM-kill victims among the watched containers' processes."""
    NAME = "oom"
    PROGRAM = PROGRAM
    TRACEPOINTS = {
        "sched:sched_process_fork": "lab_oom_fork",
        "sched:sched_process_exec": "lab_oom_exec",
        "sched:sched_process_exit": "lab_oom_exit",
        "oom:mark_victim": "lab_oom_victim",
    }
    HEADER = f"{'TIME(s)':>8} {'PID':<7} {'NSPID':<6} {'COMM':<16} EVENT"

    def on_scopes_changed(self) -> None:
        """Seed the map with the processes already in the containers (they forked before we came)."""
        members = self.bpf["members"]
        members.clear()
        for slot, scope in enumerate(self.scopes):
            for pid in scope.member_pids():
                try:
                    with open(f"/proc/{pid}/comm", "rb") as f:
                        comm = f.read().strip()[:15]
                    nspid = int(open(f"/proc/{pid}/status").read().split("NSpid:")[1].split("\n")[0].split()[-1])
                except (OSError, IndexError, ValueError):
                    continue
                members[ctypes.c_uint(pid)] = members.Leaf(slot, nspid, comm)

    def event(self, raw: dict) -> dict:
        return {"ts": raw["ts"], "event": "oom-kill", "container": self.label(raw["slot"]), "slot": raw["slot"],
                "pid": raw["pid"], "nspid": raw["nspid"], "comm": raw["comm"], "killer": raw["killer"]}

    @staticmethod
    def format(ev: dict, start_ns: int) -> str:
        return (f"{(ev['ts'] - start_ns) / 1e9:8.3f} {ev['pid']:<7} {ev['nspid']:<6} {ev['comm']:<16} "
                f"OOM-killed (by the kernel, on behalf of PID {ev['killer']})")
