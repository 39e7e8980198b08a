"""Step 8: eBPF tracing. The demo, the check, and the reference solution of lab/08-ebpf/exercise.py."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from labctl.steps import checking
from labctl import ui
from labctl.errors import CheckFailed, require_root

EXPLANATION = """
**eBPF** runs small, verified programs inside the kernel, attached to hooks. The lab uses
**tracepoints** only (`/sys/kernel/tracing/events/<category>/<event>`): stable hooks whose arguments
are described in a `format` file, present even where kprobes are not. The classroom VM's kernel
(Debian's 6.1) has kprobes; the development machine's (6.18) was built without them.

| tracer | tracepoints | like bcc's |
|---|---|---|
| `labctl trace PID --exec` | `sched:sched_process_fork/exec/exit` | execsnoop |
| `--open` | `syscalls:sys_enter_openat` / `sys_exit_openat` | opensnoop |
| `--syscalls` | `raw_syscalls:sys_enter`, counted in a map in the kernel | syscount |
| `--net` | `sock:inet_sock_set_state` | tcpstates |
| `--oom` | `oom:mark_victim` | oomkill |
| `--build` | `raw_syscalls:sys_enter/exit` of the lab's own process tree | — |

A container is a set of namespaces, so each program asks the kernel whether the current task is in
the container's **PID namespace**: `bpf_get_ns_current_pid_tgid(dev, ino, ...)` with the device and
inode of `/proc/<pid>/ns/pid`. No kernel struct is read, so the programs do not depend on the
kernel's internal layout, which only headers of the running kernel describe: the classroom VM has
them (`linux-headers-$(uname -r)`), the development machine has 6.1 headers under a 6.18 kernel.
`labctl doctor` (and the first table below) shows what this machine has.
"""

#: The exercise with its four TODOs done: the reference solution, same command-line contract.
SOLUTION = r"""
BPF_ARRAY(execs, u64, 1);

int count_exec(struct tracepoint__sched__sched_process_exec *args)
{
    struct bpf_pidns_info ns = {};
    if (bpf_get_ns_current_pid_tgid(PIDNS_DEV, PIDNS_INO, &ns, sizeof(ns)) != 0)
        return 0;
    int zero = 0;
    execs.increment(zero);
    return 0;
}
"""

KNOWN_COMMANDS = ("/bin/true", "cat /etc/hostname", "sleep 0", "/bin/true", "cat /etc/os-release")


def demo() -> None:
    from labctl import tracing
    from labctl.tracing import Scope, buildtrace
    from labctl.tracing.execsnoop import ExecTracer
    from labctl.tracing.syscount import SyscallCounter
    from labctl.demos.workload import ShellContainer
    require_root("the eBPF demo")
    ui.table(("needs", "status", "detail"), [(n, s, d) for n, s, d, _ in tracing.diagnose()],
             title="What bcc needs on this machine")

    ui.say("\n[bold]1. Watch a container being built.[/bold] A tracer follows the lab's own process tree "
           "(raw_syscalls) while it builds a container: cgroup, namespaces, root filesystem:")
    calls, start = buildtrace.trace_construction(hostname="lab-demo8")
    keep = {"unshare", "sethostname", "pivot_root", "umount2"}
    for c in calls:
        if c.name in keep or (c.name == "mount" and '"proc"' in c.text) or (c.name == "clone" and c.role == "helper") \
                or (c.name == "write" and ("memory.limit_in_bytes" in c.text or "memory.max" in c.text)) \
                or (c.name == "write" and "memory/" in c.text and "cgroup.procs" in c.text):
            ui.kernel(f"{(c.ts - start) / 1e6:+7.2f} ms  {c.role:<7} {c.text}   [dim]step {c.step}: {c.why}[/dim]")
    ui.say(f"  ({len(calls)} calls in all: `labctl trace --build` prints every one)")

    ui.say("\n[bold]2. Watch one container, not its neighbour.[/bold] Two containers run the same commands; "
           "one compiled syscall counter watches both (two scope slots), an exec tracer only the first:")
    with ShellContainer("lab-demo8-a") as a, ShellContainer("lab-demo8-b") as b:
        with SyscallCounter([Scope.of_pid(a.pid, label="A"), Scope.of_pid(b.pid, label="B")]) as counter, \
                ExecTracer(Scope.of_pid(a.pid, label="A")) as execs:
            ids = counter.program_ids() + execs.program_ids()
            ui.kernel(f"attached in {counter.attach_seconds:.2f} s and {execs.attach_seconds:.2f} s "
                      f"(bcc compile included); program ids {ids}")
            a.run("cat /etc/hostname >/dev/null; dd if=/dev/zero of=/dev/null bs=1 count=2000 2>/dev/null")
            b.run("cat /etc/hostname >/dev/null; dd if=/dev/zero of=/dev/null bs=1 count=500 2>/dev/null")
            for ev in execs.drain():
                if ev["event"] == "exec":
                    ui.kernel(f"A exec: host PID {ev['pid']}, PID {ev['nspid']} inside: {' '.join(ev['argv'])}")
            top_a, top_b = counter.counts(0), counter.counts(1)
            rows = [(name, top_a.get(name, 0), top_b.get(name, 0)) for name in list(top_a)[:5]]
            ui.table(("syscall", "container A", "container B"), rows, title="Syscalls counted in the kernel")
    try:
        still = set(ids) & set(tracing.loaded_program_ids())
        where = "`bpftool prog show`"
    except Exception:
        still = set(ids) & set(tracing.program_ids_held_by(os.getpid()))
        where = f"/proc/{os.getpid()}/fdinfo"
    ui.kernel(f"after the tracers closed, {where} lists {len(still)} of the programs {ids}")
    if still:
        ui.warn(f"still loaded: {sorted(still)}")
    else:
        ui.ok("the programs were detached and unloaded")


def check(command: list[str]) -> list[str]:
    """Judge `command PID`: ready, then Ctrl-C -> `execs: N` equal to what the container executed."""
    from labctl.demos.workload import ShellContainer
    verified: list[str] = []
    with ShellContainer("lab-check8-a") as box, ShellContainer("lab-check8-b") as other:
        with checking.running(command + [str(box.pid)]) as run:
            ready = checking.wait_until(lambda: "ready" in run.output() or run.popen.poll() is not None, 60)
            out = run.output()
            checking.expect(ready and "ready" in out and run.popen.poll() is None,
                            "the exercise did not print `ready` and keep running",
                            "the compiler's first error (with its line of C) or the traceback above says "
                            "what stopped it; run it by hand: `sudo labctl exercise 8 -- PID`", verified, "the program compiled, loaded and printed `ready`")
            _expect_exec_tracepoint([run.popen.pid] + run.descendants(), verified)
            for cmd in KNOWN_COMMANDS:   # the same programs in the container, its neighbour, and the host
                box.run(f"{cmd} >/dev/null; {FORK_ONLY}")
                other.run(f"{cmd} >/dev/null")
                subprocess.run(["/bin/busybox", "sh", "-c", f"{cmd} >/dev/null"], check=False)
            time.sleep(0.2)
            os.kill(run.popen.pid, signal.SIGINT)
            checking.exit_status(run, timeout=15)
            out = run.output()
    match = re.search(r"execs:\s*(\d+)", out)
    checking.expect(match is not None, "the exercise did not print `execs: N` when interrupted",
                    "keep the end of main(): it prints the counter after Ctrl-C", verified,
                    "it printed its count when interrupted")
    counted, expected = int(match.group(1)), len(KNOWN_COMMANDS)
    if counted == 0:
        raise CheckFailed(f"the program counted 0 execs; the container ran {expected}",
                          "attach count_exec to sched:sched_process_exec (TODO 4), add one to the counter "
                          "(TODO 2), and pass the namespace's st_dev and st_ino (TODO 3)")
    if counted > expected:
        raise CheckFailed(f"the program counted {counted} execs, but the container ran {expected}: it counts "
                          "the second container's and the host's too, or the container's forks (it also forked "
                          f"{len(KNOWN_COMMANDS)} subshells that exec'd nothing)",
                          "return early unless bpf_get_ns_current_pid_tgid(PIDNS_DEV, PIDNS_INO, ...) == 0 (TODO 1); "
                          "count execs only (TODO 4)")
    checking.expect(counted == expected, f"the program counted {counted} execs; the container ran {expected}",
                    "count every sched_process_exec of the namespace, once", verified,
                    f"it counted exactly the {expected} programs the container executed, none of the "
                    f"{2 * expected} run at the same time in a second container and on the host")
    return verified


#: A subshell running a builtin: busybox sh forks for it and execs nothing.
FORK_ONLY = "( : )"


def _expect_exec_tracepoint(pids: list[int], verified: list[str]) -> None:
    """Which tracepoints the exercise's processes attached programs to, as the kernel lists them
    (`bpftool perf show`: the perf events that hold a BPF program, by process and fd)."""
    import json
    import shutil
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    if not os.path.exists(bpftool):
        return      # judged by the count alone
    shown = subprocess.run([bpftool, "perf", "show", "--json"], capture_output=True, text=True)
    if shown.returncode != 0:
        return
    attached = sorted({e.get("tracepoint", "?") for e in json.loads(shown.stdout or "[]")
                       if e.get("pid") in pids and e.get("fd_type") == "tracepoint"})
    checking.expect("sched_process_exec" in attached,
                    f"the program is attached to {', '.join(attached) or 'no tracepoint'} (bpftool perf show), "
                    "not sched_process_exec" + (": a fork makes a new process running the same program; "
                                                "only an exec starts another program" if "sched_process_fork"
                                                in attached else ""),
                    "attach count_exec to the tracepoint that fires when a process executes a new program: "
                    "sched:sched_process_exec (TODO 4)", verified,
                    f"bpftool perf show: its program is attached to {', '.join(attached)}")


def reference(argv: list[str]) -> int:
    """Reference solution: `PID`; prints ready, and `execs: N` on SIGINT/SIGTERM."""
    if len(argv) != 1:
        print("usage: python -m labctl.steps.s08_ebpf PID", file=sys.stderr)
        return 2
    from bcc import BPF
    st = os.stat(f"/proc/{int(argv[0])}/ns/pid")
    b = BPF(text=SOLUTION, cflags=[f"-DPIDNS_DEV={st.st_dev}", f"-DPIDNS_INO={st.st_ino}"])
    b.attach_tracepoint(tp=b"sched:sched_process_exec", fn_name=b"count_exec")
    print("ready", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    print(f"execs: {b[b'execs'][0].value}", flush=True)
    b.cleanup()
    return 0


if __name__ == "__main__":
    from labctl.steps import run_reference
    run_reference(reference)
