"""Files one container opens, like bcc's opensnoop: openat(2) with its flags and result.

    labctl trace 4242 --open
    TIME(s)  PID    NSPID  COMM             FD  ERR FLAGS      PATH
       0.102 4251   4      cat               3    0 O_RDONLY   /etc/hostname
       0.140 4252   5      cat              -1    2 O_RDONLY   /nope

The path is a pointer into the process's memory: it is saved at syscall entry and read at exit,
when the kernel has said whether the open worked. glibc's open() calls openat(2) since glibc 2.26,
so openat alone sees nearly every open.
"""
from __future__ import annotations

import os

from labctl.tracing.tracer import Tracer

PROGRAM = r"""
struct event_t {
    u64 ts;
    s32 slot;
    u32 pid;            /* host PID */
    u32 nspid;          /* PID inside the container */
    s32 ret;            /* the new fd, or -errno */
    u32 flags;          /* O_* */
    char comm[16];
    char path[128];
};
struct entry_t {
    const char *path;   /* user pointer, read when the call returns */
    u32 flags;
    s32 slot;
};
BPF_RINGBUF_OUTPUT(events, 64);
BPF_HASH(entries, u32, struct entry_t, 4096);   /* thread -> the openat in progress */

int lab_openat_enter(struct tracepoint__syscalls__sys_enter_openat *args)
{
    struct bpf_pidns_info ns = {};
    int slot = scope_slot(&ns);
    if (slot < 0)
        return 0;
    struct entry_t entry = {.path = args->filename, .flags = args->flags, .slot = slot};
    u32 tid = bpf_get_current_pid_tgid();
    entries.update(&tid, &entry);
    return 0;
}

int lab_openat_exit(struct tracepoint__syscalls__sys_exit_openat *args)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = id;
    struct entry_t *entry = entries.lookup(&tid);
    if (!entry)
        return 0;
    struct event_t *e = events.ringbuf_reserve(sizeof(struct event_t));
    if (e) {
        struct bpf_pidns_info ns = {};
        scope_slot(&ns);
        e->ts = bpf_ktime_get_ns();
        e->slot = entry->slot;
        e->pid = id >> 32;
        e->nspid = ns.tgid;
        e->ret = args->ret;
        e->flags = entry->flags;
        bpf_get_current_comm(&e->comm, sizeof(e->comm));
        bpf_probe_read_user_str(e->path, sizeof(e->path), entry->path);
        events.ringbuf_submit(e, 0);
    }
    entries.delete(&tid);
    return 0;
}
"""

_ACCESS = {os.O_RDONLY: "O_RDONLY", os.O_WRONLY: "O_WRONLY", os.O_RDWR: "O_RDWR"}
_FLAGS = [(os.O_CREAT, "O_CREAT"), (os.O_TRUNC, "O_TRUNC"), (os.O_APPEND, "O_APPEND"),
          (os.O_DIRECTORY, "O_DIRECTORY"), (os.O_CLOEXEC, "O_CLOEXEC"), (os.O_EXCL, "O_EXCL")]


def decode_open_flags(flags: int) -> str:
    names = [_ACCESS.get(flags & 3, hex(flags & 3))]
    names += [name for bit, name in _FLAGS if flags & bit]
    return "|".join(names)


class OpenTracer(Tracer):
    """openat(2) calls of the watched containers."""
    NAME = "open"
    PROGRAM = PROGRAM
    TRACEPOINTS = {
        "syscalls:sys_enter_openat": "lab_openat_enter",
        "syscalls:sys_exit_openat": "lab_openat_exit",
    }
    HEADER = f"{'TIME(s)':>8} {'PID':<7} {'NSPID':<6} {'COMM':<16} {'FD':>3} {'ERR':>4} {'FLAGS':<24} PATH"

    def event(self, raw: dict) -> dict:
        ret = raw["ret"]
        return {"ts": raw["ts"], "event": "open", "container": self.label(raw["slot"]), "slot": raw["slot"],
                "pid": raw["pid"], "nspid": raw["nspid"], "comm": raw["comm"], "path": raw["path"],
                "fd": ret if ret >= 0 else -1, "errno": -ret if ret < 0 else 0,
                "flags": decode_open_flags(raw["flags"])}

    @staticmethod
    def format(ev: dict, start_ns: int) -> str:
        return (f"{(ev['ts'] - start_ns) / 1e9:8.3f} {ev['pid']:<7} {ev['nspid']:<6} {ev['comm']:<16} "
                f"{ev['fd']:>3} {ev['errno']:>4} {ev['flags']:<24} {ev['path']}")
