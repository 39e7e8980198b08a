"""Writes notebooks/08-ebpf.ipynb (without outputs). Run: python notebooks/make_08_ebpf.py [OUTPUT]"""
from nbformat.v4 import new_code_cell, new_markdown_cell

from nbwriter import write_notebook

cells = [
 new_markdown_cell("""# Step 8 — eBPF tracing with bcc

eBPF programs run inside the kernel, attached to **tracepoints**. Each of the lab's programs asks the
kernel whether the current task lives in one container's **PID namespace**
(`bpf_get_ns_current_pid_tgid` with the device and inode of `/proc/<pid>/ns/pid`), so it sees that
container and nothing else. This notebook uses the same library as `labctl trace` and `labctl step 8`."""),
 new_code_cell("""%matplotlib inline
import time
from labctl import tracing
from labctl.tracing import Scope, buildtrace
from labctl.tracing.execsnoop import ExecTracer
from labctl.tracing.syscount import SyscallCounter
from labctl.demos.workload import ShellContainer
from labctl.plots import tracing as plots
for name, status, detail, fix in tracing.diagnose():
    print(f"{name:15} {status:5} {detail}")"""),
 new_markdown_cell("""## 1. Watch a container being built
A tracer follows the lab's own process tree (`raw_syscalls:sys_enter/exit`, plus `sched_process_fork`
to add each new child) while the lab builds a container: a cgroup with a memory limit (step 3),
new namespaces (step 1), the root filesystem and pivot_root (step 2). Every call is annotated with the
step that explains it, and the bar after each marker is how long the kernel took to return."""),
 new_code_cell("""calls, start = buildtrace.trace_construction(hostname="lab-nb8")
for line in buildtrace.format_timeline(calls, start)[:40]:
    print(line)
print(f"... {len(calls)} calls in all")"""),
 new_code_cell("""plots.construction_timeline(calls, start);"""),
 new_markdown_cell("""## 2. Two containers, the same commands, one compiled program
One syscall counter watches both containers through two scope slots (a BPF array map written from
Python: no recompilation), and an exec tracer watches only the first. The host runs the same commands
too; neither program sees them."""),
 new_code_cell("""a, b = ShellContainer("lab-nb8-a"), ShellContainer("lab-nb8-b")
try:
    with SyscallCounter([Scope.of_pid(a.pid, label="container A"), Scope.of_pid(b.pid, label="container B")]) as counter, \\
         ExecTracer(Scope.of_pid(a.pid, label="container A")) as execs:
        t0 = time.monotonic_ns()
        a.run("cat /etc/hostname; sleep 0.05; ls / >/dev/null; dd if=/dev/zero of=/dev/null bs=1 count=3000 2>/dev/null")
        a.run("sh -c 'cat /etc/os-release >/dev/null; sleep 0.05'; /bin/true")
        b.run("cat /etc/hostname; find / -xdev >/dev/null 2>&1; dd if=/dev/zero of=/dev/null bs=64 count=300 2>/dev/null")
        events = execs.drain()
        t1 = time.monotonic_ns()
        counts = {"container A": counter.counts(0), "container B": counter.counts(1)}
finally:
    a.close(); b.close()
for ev in events:
    print(ExecTracer.format(ev, t0))"""),
 new_code_cell("""plots.syscall_histogram(counts, top=10);"""),
 new_code_cell("""plots.exec_tree(events, t0, t1);"""),
 new_markdown_cell("""Every program was detached when its `with` block ended: the kernel's list of loaded programs
(`bpftool prog show`) has no `lab_*` program of this notebook left."""),
 new_code_cell("""import os
print("programs this kernel still runs for this notebook:", tracing.program_ids_held_by(os.getpid()))"""),
]

write_notebook(cells, "08-ebpf.ipynb")
