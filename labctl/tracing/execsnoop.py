"""Processes of one container: fork, exec (with argv) and exit, like bcc's execsnoop.

    labctl trace 4242 --exec
    TIME(s)  EVENT PID    NSPID  PPID   COMM         DETAIL
       0.412 fork  4250   3      4242   sh           child 4251
       0.413 exec  4251   4      4250   ls           /bin/ls ls -l /
       0.415 exit  4251   4      4250   ls

sched:sched_process_exec fires once the new program is in place, but its arguments are gone from the
kernel's view by then (they are in the new process's memory); so syscalls:sys_enter_execve copies
argv from user memory into a map keyed by thread, and the exec event picks it up.
"""
from __future__ import annotations

import os

from labctl.tracing.tracer import Tracer

PROGRAM = r"""
#define ARGC 8          /* arguments kept per exec */
#define ARGLEN 32       /* bytes kept per argument */
enum { EV_FORK = 1, EV_EXEC = 2, EV_EXIT = 3, EV_EXEC_FAILED = 4 };

struct event_t {
    u64 ts;              /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
    u32 kind;
    s32 slot;            /* which watched container */
    u32 pid;             /* host PID */
    u32 nspid;           /* PID inside the container */
    u32 other;           /* fork: the child's host PID; exec: the PID before exec */
    s32 ret;             /* failed exec: -errno */
    char comm[16];
    char filename[64];
    char argv[ARGC * ARGLEN];   /* flat: bcc's Python side reads no 2-D arrays */
};
BPF_RINGBUF_OUTPUT(events, 64);                 /* 64 pages, shared by all CPUs, in order */
BPF_HASH(pending, u32, struct event_t, 1024);   /* thread -> argv copied at execve entry */
BPF_PERCPU_ARRAY(scratch, struct event_t, 1);   /* too big for the 512-byte BPF stack */

int lab_exec_enter(struct tracepoint__syscalls__sys_enter_execve *args)
{
    struct bpf_pidns_info ns = {};
    int slot = scope_slot(&ns);
    if (slot < 0)
        return 0;
    int zero = 0;
    struct event_t *e = scratch.lookup(&zero);
    if (!e)
        return 0;
    const char *const *argv = (const char *const *)args->argv;
    int done = 0;
    #pragma unroll
    for (int i = 0; i < ARGC; i++) {
        const char *arg = NULL;
        e->argv[i * ARGLEN] = 0;
        if (!done)
            bpf_probe_read_user(&arg, sizeof(arg), &argv[i]);
        if (!arg)
            done = 1;
        else
            bpf_probe_read_user_str(&e->argv[i * ARGLEN], ARGLEN, arg);
    }
    bpf_probe_read_user_str(e->filename, sizeof(e->filename), args->filename);
    u32 tid = bpf_get_current_pid_tgid();
    pending.update(&tid, e);
    return 0;
}

/* The exec succeeded: the task now runs the new program (and comm is its name). */
int lab_exec(struct tracepoint__sched__sched_process_exec *args)
{
    struct bpf_pidns_info ns = {};
    int slot = scope_slot(&ns);
    if (slot < 0)
        return 0;
    u32 tid = bpf_get_current_pid_tgid();
    int zero = 0;
    struct event_t *e = pending.lookup(&tid);
    if (!e) {                          /* execve began before we attached */
        e = scratch.lookup(&zero);
        if (!e)
            return 0;
        e->argv[0] = 0;
    }
    e->ts = bpf_ktime_get_ns();
    e->kind = EV_EXEC;
    e->slot = slot;
    e->pid = args->pid;
    e->nspid = ns.tgid;
    e->other = args->old_pid;
    e->ret = 0;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    /* the path the kernel resolved, kept in the tracepoint record (a __data_loc string) */
    bpf_probe_read_kernel_str(e->filename, sizeof(e->filename),
                              (void *)args + (args->data_loc_filename & 0xFFFF));
    events.ringbuf_output(e, sizeof(*e), 0);
    pending.delete(&tid);
    return 0;
}

/* execve returns only when it failed (or, with 0, in the new program, already reported). */
int lab_exec_exit(struct tracepoint__syscalls__sys_exit_execve *args)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct event_t *e = pending.lookup(&tid);
    if (!e)
        return 0;
    if (args->ret < 0) {
        e->ts = bpf_ktime_get_ns();
        e->kind = EV_EXEC_FAILED;
        e->pid = bpf_get_current_pid_tgid() >> 32;
        e->ret = args->ret;
        bpf_get_current_comm(&e->comm, sizeof(e->comm));
        struct bpf_pidns_info ns = {};
        e->slot = scope_slot(&ns);
        e->nspid = ns.tgid;
        events.ringbuf_output(e, sizeof(*e), 0);
    }
    pending.delete(&tid);
    return 0;
}

/* Runs in the parent; the child's host PID is in the record. (Threads are forks here too.) */
int lab_fork(struct tracepoint__sched__sched_process_fork *args)
{
    struct bpf_pidns_info ns = {};
    int slot = scope_slot(&ns);
    if (slot < 0)
        return 0;
    struct event_t *e = events.ringbuf_reserve(sizeof(struct event_t));
    if (!e)
        return 0;
    e->ts = bpf_ktime_get_ns();
    e->kind = EV_FORK;
    e->slot = slot;
    e->pid = args->parent_pid;
    e->nspid = ns.tgid;
    e->other = args->child_pid;
    e->ret = 0;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    e->filename[0] = 0;
    e->argv[0] = 0;
    events.ringbuf_submit(e, 0);
    return 0;
}

int lab_exit(struct tracepoint__sched__sched_process_exit *args)
{
    u64 id = bpf_get_current_pid_tgid();
    if ((id >> 32) != (u32)id)         /* a thread, not the whole process */
        return 0;
    struct bpf_pidns_info ns = {};
    int slot = scope_slot(&ns);
    if (slot < 0)
        return 0;
    struct event_t *e = events.ringbuf_reserve(sizeof(struct event_t));
    if (!e)
        return 0;
    e->ts = bpf_ktime_get_ns();
    e->kind = EV_EXIT;
    e->slot = slot;
    e->pid = id >> 32;
    e->nspid = ns.tgid;
    e->other = 0;
    e->ret = 0;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    e->filename[0] = 0;
    e->argv[0] = 0;
    events.ringbuf_submit(e, 0);
    return 0;
}
"""

KINDS = {1: "fork", 2: "exec", 3: "exit", 4: "exec-failed"}


class ExecTracer(Tracer):
    """fork, exec and exit of the watched containers' processes."""
    NAME = "exec"
    PROGRAM = PROGRAM
    TRACEPOINTS = {
        "syscalls:sys_enter_execve": "lab_exec_enter",
        "syscalls:sys_exit_execve": "lab_exec_exit",
        "sched:sched_process_exec": "lab_exec",
        "sched:sched_process_fork": "lab_fork",
        "sched:sched_process_exit": "lab_exit",
    }
    RAW_FIELDS = ("argv",)
    HEADER = f"{'TIME(s)':>8} {'EVENT':<5} {'PID':<7} {'NSPID':<6} {'PPID':<7} {'COMM':<16} DETAIL"

    def __init__(self, *args, **kw):
        self.parents: dict[int, int] = {}   # host pid -> parent's host pid, learnt from fork events
        super().__init__(*args, **kw)

    def event(self, raw: dict) -> dict:
        kind = KINDS.get(raw["kind"], "?")
        ev = {"ts": raw["ts"], "event": kind, "container": self.label(raw["slot"]), "slot": raw["slot"],
              "pid": raw["pid"], "nspid": raw["nspid"], "comm": raw["comm"]}
        if kind == "fork":
            ev["child"] = raw["other"]
            self.parents[raw["other"]] = raw["pid"]
        if kind in ("exec", "exec-failed"):
            ev["filename"] = raw["filename"]
            ev["argv"] = split_args(raw["argv"])
            if kind == "exec-failed":
                ev["errno"] = -raw["ret"]
        ev["ppid"] = self.parents.get(raw["pid"]) or _ppid(raw["pid"])
        return ev

    @staticmethod
    def format(ev: dict, start_ns: int) -> str:
        detail = {"fork": lambda: f"child {ev['child']}",
                  "exec": lambda: _command_line(ev),
                  "exec-failed": lambda: f"{ev['filename']}: {os.strerror(ev['errno'])}",
                  "exit": lambda: ""}[ev["event"]]()
        return (f"{(ev['ts'] - start_ns) / 1e9:8.3f} {ev['event'][:5]:<5} {ev['pid']:<7} {ev['nspid']:<6} "
                f"{ev['ppid'] or '?':<7} {ev['comm']:<16} {detail}")


def _command_line(ev: dict) -> str:
    """argv as typed, and the file the kernel ran when its name differs (busybox re-execs /proc/self/exe)."""
    if not ev["argv"]:
        return ev["filename"]
    line = " ".join(ev["argv"])
    return line if ev["argv"][0] == ev["filename"] else f"{line}  [{ev['filename']}]"


def split_args(flat: bytes | str, arglen: int = 32) -> list[str]:
    """argv from the flat ARGC*ARGLEN buffer: one NUL-terminated string every ARGLEN bytes."""
    raw = flat if isinstance(flat, bytes) else flat.encode()
    out = []
    for i in range(0, len(raw), arglen):
        arg = raw[i:i + arglen].split(b"\0", 1)[0]
        if not arg:
            break
        out.append(arg.decode(errors="replace"))
    return out


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
