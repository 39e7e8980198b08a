"""System calls of one container, counted in the kernel, like bcc's syscount.

    labctl trace 4242 --syscalls --duration 5
    SYSCALL              COUNT
    read                  1024
    openat                 210
    ...

raw_syscalls:sys_enter fires on every system call of every process; the program keeps only the
watched containers' and adds one to a counter per (container, syscall number) in a hash map.
Nothing crosses to user space per call: Python reads the map when it wants the totals. This is
what makes counting cheap enough to leave on.
"""
from __future__ import annotations


from labctl.tracing.tracer import Tracer

PROGRAM = r"""
struct key_t {
    s32 slot;    /* which watched container */
    u32 nr;      /* the syscall number (x86_64: 0 read, 1 write, 257 openat, ...) */
};
BPF_HASH(counts, struct key_t, u64, 4096);

int lab_sys_enter(struct tracepoint__raw_syscalls__sys_enter *args)
{
    struct bpf_pidns_info ns = {};
    int slot = scope_slot(&ns);
    if (slot < 0)
        return 0;
    struct key_t key = {.slot = slot, .nr = args->id};
    counts.increment(key);
    return 0;
}
"""


#: Syscalls newer than the table of Debian 12's bcc (0.26). From number 424 on, Linux gives a new syscall
#: the same number on every architecture (alpha aside): these hold on x86_64 and arm64 alike.
NEWER_SYSCALLS = {"pidfd_send_signal": 424, "pidfd_open": 434, "clone3": 435, "close_range": 436,
                  "openat2": 437, "pidfd_getfd": 438, "faccessat2": 439, "mount_setattr": 442}


def syscall_name(nr: int) -> str:
    newer = next((name for name, number in NEWER_SYSCALLS.items() if number == nr), None)
    if newer:
        return newer
    from bcc.syscall import syscall_name as bcc_name
    name = bcc_name(nr)
    return name.decode() if isinstance(name, bytes) else str(name)


def syscall_number(name: str) -> int:
    """The number of a syscall on this architecture, from bcc's table (or NEWER_SYSCALLS)."""
    from bcc.syscall import syscalls
    for nr, known in syscalls.items():
        if (known.decode() if isinstance(known, bytes) else known) == name:
            return nr
    if name in NEWER_SYSCALLS:
        return NEWER_SYSCALLS[name]
    raise KeyError(name)


class SyscallCounter(Tracer):
    """Per-container syscall counts; read them with counts()."""
    NAME = "syscalls"
    PROGRAM = PROGRAM
    TRACEPOINTS = {"raw_syscalls:sys_enter": "lab_sys_enter"}
    EVENTS_MAP = None

    def counts(self, slot: int = 0) -> dict[str, int]:
        """{syscall name: count} for one watched container, biggest first."""
        out: dict[str, int] = {}
        for key, value in self.bpf["counts"].items():
            if key.slot == slot:
                name = syscall_name(key.nr)
                out[name] = out.get(name, 0) + value.value
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def clear(self) -> None:
        self.bpf["counts"].clear()

    def on_scopes_changed(self) -> None:
        self.clear()

    @staticmethod
    def format_table(counts: dict[str, int], top: int = 15) -> str:
        lines = [f"{'SYSCALL':<22} {'COUNT':>8}"]
        lines += [f"{name:<22} {count:>8}" for name, count in list(counts.items())[:top]]
        return "\n".join(lines)
