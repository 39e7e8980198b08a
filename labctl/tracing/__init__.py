"""Tracing (step 8): eBPF programs with bcc, on tracepoints, scoped to one container. Docker has no
counterpart of its own; this is what bcc's tools/ and Inspektor Gadget do beside a container engine.

How it is built, one concern per module:
    requirements.py  what tracing needs (tracefs, kernel headers, bcc), probed; `labctl doctor` shows it
    scope.py         which container: a PID or a name -> its PID namespace; the C test every program runs
    tracer.py        loading a bcc program, and the Tracer base class (attach, ring buffer, detach)
    trace.py         `labctl trace CONTAINER --KIND` and `labctl trace --build`

The tracers, each one module in the style of bcc's tools/: the BPF C program in one commented raw
string beside the Python that loads it.
    execsnoop.py   sched:sched_process_fork/exec/exit (+ syscalls:sys_enter_execve for argv)
    opensnoop.py   syscalls:sys_enter_openat / sys_exit_openat
    syscount.py    raw_syscalls:sys_enter, counted in the kernel
    tcpstates.py   sock:inet_sock_set_state
    oomkill.py     oom:mark_victim
    denied.py      raw_syscalls:sys_exit returning -EPERM/-EACCES: what seccomp and capabilities stop
    buildtrace.py  raw_syscalls:sys_enter/exit of the lab's own process tree: a container being built
    buildcalls.py  what each of those calls did for the container, written as C, with its step
    daemontrace.py    step 11: one `docker run` through labctl's daemon, client, daemon, supervisor and
                      PID 1 followed from the client's connect() to PID 1's execve() (connect, accept4,
                      recvfrom, fork, unshare, mount, cgroup_attach_task, sched_process_exec)
    daemontimeline.py those events read: each process's role, the one timeline, the phases' durations

Why tracepoints and not kprobes: a tracepoint is a stable hook the kernel developers maintain, its
arguments are described in /sys/kernel/tracing/events/<category>/<event>/format (bcc reads that file,
so the program fits the running kernel), and it exists on kernels built without kprobes, like this one.

The names below are the package's surface: `from labctl import tracing; tracing.diagnose()`.
"""
from labctl.tracing.requirements import TRACEFS, diagnose, require_tracing
from labctl.tracing.scope import MAX_SCOPES, Scope, cgroup2_mount, register_resolver, resolve_container
from labctl.tracing.trace import KINDS, stop_on_signals, trace_build, trace_container, tracer_for
from labctl.tracing.tracer import Tracer, load_bpf, loaded_program_ids, program_ids_held_by

__all__ = ["TRACEFS", "diagnose", "require_tracing", "MAX_SCOPES", "Scope", "cgroup2_mount", "register_resolver",
           "resolve_container", "KINDS", "stop_on_signals", "trace_build", "trace_container", "tracer_for",
           "Tracer", "load_bpf", "loaded_program_ids", "program_ids_held_by"]
