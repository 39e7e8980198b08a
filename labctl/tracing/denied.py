"""System calls the kernel refused one container, live: what its seccomp filter (and its missing
capabilities) stop, as they happen (step 9).

    labctl trace web --denied
    TIME(s)  PID     NSPID  COMM             SYSCALL            ERRNO
       0.412 4251    7      attacker         mount              EPERM
       0.413 4251    7      attacker         init_module        EPERM

raw_syscalls:sys_exit fires when any system call returns, with its number and its return value. A
seccomp filter's SCMP_ACT_ERRNO(EPERM) makes the call return -EPERM without running it; a missing
capability makes the kernel itself return -EPERM (or -EACCES) from inside it. Both show here; the
difference is in `Seccomp:` and `CapEff:` of /proc/PID/status, which step 9's check reads.
Only the watched containers' calls that failed with EPERM or EACCES cross to user space.
"""
from __future__ import annotations

import errno

from labctl.tracing.syscount import syscall_name
from labctl.tracing.tracer import Tracer

PROGRAM = r"""
struct event_t {
    u64 ts;
    s32 slot;
    u32 pid;            /* host PID */
    u32 nspid;          /* PID inside the container */
    u32 nr;             /* the syscall number */
    s32 ret;            /* -EPERM or -EACCES */
    char comm[16];
};
BPF_RINGBUF_OUTPUT(events, 64);

int lab_sys_exit(struct tracepoint__raw_syscalls__sys_exit *args)
{
    long ret = args->ret;
    if (ret != -EPERM && ret != -EACCES)
        return 0;                       /* first the cheap test: most calls succeed */
    struct bpf_pidns_info ns = {};
    int slot = scope_slot(&ns);
    if (slot < 0)
        return 0;
    struct event_t *e = events.ringbuf_reserve(sizeof(struct event_t));
    if (!e)
        return 0;
    e->ts = bpf_ktime_get_ns();
    e->slot = slot;
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->nspid = ns.tgid;
    e->nr = args->id;
    e->ret = ret;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    events.ringbuf_submit(e, 0);
    return 0;
}
"""


class DeniedTracer(Tracer):
    """Each call of the watched containers that returned EPERM or EACCES."""
    NAME = "denied"
    PROGRAM = "#include <uapi/asm-generic/errno-base.h>\n" + PROGRAM
    TRACEPOINTS = {"raw_syscalls:sys_exit": "lab_sys_exit"}
    HEADER = f"{'TIME(s)':>8} {'PID':<7} {'NSPID':<6} {'COMM':<16} {'SYSCALL':<18} ERRNO"

    def event(self, raw: dict) -> dict:
        return {"ts": raw["ts"], "event": "denied", "container": self.label(raw["slot"]), "slot": raw["slot"],
                "pid": raw["pid"], "nspid": raw["nspid"], "comm": raw["comm"], "nr": raw["nr"],
                "syscall": syscall_name(raw["nr"]), "errno": errno.errorcode.get(-raw["ret"], str(-raw["ret"]))}

    @staticmethod
    def format(ev: dict, start_ns: int) -> str:
        return (f"{(ev['ts'] - start_ns) / 1e9:8.3f} {ev['pid']:<7} {ev['nspid']:<6} {ev['comm']:<16} "
                f"{ev['syscall']:<18} {ev['errno']}")
