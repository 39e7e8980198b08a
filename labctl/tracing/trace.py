"""`labctl trace`: one tracer, scoped to one container, streaming its events until Ctrl-C or the
container ends; and `labctl trace --build`, the timeline of a container being built.

    labctl trace 4242 --exec          execsnoop.py: fork, exec (with argv), exit
    labctl trace web --open           opensnoop.py: files opened
    labctl trace web --syscalls       syscount.py: syscalls counted in the kernel, printed at the end
    labctl trace web --net            tcpstates.py: TCP state changes
    labctl trace web --oom            oomkill.py: the OOM killer's victims
    labctl trace web --denied         denied.py: calls refused with EPERM/EACCES (seccomp, capabilities)
    labctl trace --build              buildtrace.py: the syscalls that build a container (steps 1-3)
"""
from __future__ import annotations

import contextlib
import importlib
import json
import signal
import sys
import time
from typing import Callable, Iterator

from labctl.errors import LabError
from labctl.tracing.scope import Scope, resolve_container

#: --KIND -> (module, class): each tracer is imported only when chosen (bcc is slow to import).
TRACERS = {"exec": ("labctl.tracing.execsnoop", "ExecTracer"),
           "open": ("labctl.tracing.opensnoop", "OpenTracer"),
           "syscalls": ("labctl.tracing.syscount", "SyscallCounter"),
           "net": ("labctl.tracing.tcpstates", "TcpStateTracer"),
           "oom": ("labctl.tracing.oomkill", "OomTracer"),
           "denied": ("labctl.tracing.denied", "DeniedTracer")}
KINDS = tuple(TRACERS)


def tracer_for(kind: str):
    """The Tracer class for --exec, --open, --syscalls, --net, --oom or --denied."""
    if kind not in TRACERS:
        raise LabError(f"unknown tracer {kind!r}", "use --exec, --open, --syscalls, --net, --oom or --denied")
    module, name = TRACERS[kind]
    return getattr(importlib.import_module(module), name)


@contextlib.contextmanager
def stop_on_signals(signals=(signal.SIGINT, signal.SIGTERM)) -> Iterator[Callable[[], bool]]:
    """While inside, Ctrl-C and SIGTERM set a flag instead of raising: an exception raised while bcc
    is calling back into Python from its ring buffer would be swallowed by ctypes, and the tracer
    would never stop. The loop checks the flag; epoll_wait returns early (EINTR) when a signal comes."""
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: received.append(signum)) for sig in signals}
    try:
        yield lambda: bool(received)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def trace_container(container: str | int, kind: str, duration: float | None = None, json_output: bool = False,
                    by_cgroup: bool = False, top: int = 15, debug: bool = False, out=print) -> int:
    """`labctl trace CONTAINER --KIND`: stream one tracer's events (or, for syscalls, print the counts
    at the end) until `duration` passes or Ctrl-C/SIGTERM; the programs are detached on the way out."""
    pid = resolve_container(container)
    scope = Scope.of_pid(pid, by_cgroup=by_cgroup, label=str(container))
    cls = tracer_for(kind)
    with cls(scope, debug=debug) as tracer, stop_on_signals() as interrupted:
        def stopped() -> bool:   # Ctrl-C, SIGTERM, or the container is gone (its PID namespace with it)
            return interrupted() or not scope.still_running()

        print(f"labctl: tracing {kind} in container {container} (PID namespace {scope.pidns_ino}"
              + (f", cgroup id {scope.cgroup_id}" if scope.cgroup_id else "")
              + f"); attached in {tracer.attach_seconds:.2f} s; Ctrl-C to stop", file=sys.stderr, flush=True)
        start = time.monotonic_ns()
        try:
            if kind == "syscalls":
                deadline = None if duration is None else time.monotonic() + duration
                while (deadline is None or time.monotonic() < deadline) and not stopped():
                    time.sleep(0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic())))
            else:
                if not json_output:
                    out(tracer.HEADER)
                for ev in tracer.stream(duration, stop=stopped):
                    out(json.dumps({**ev, "t": round((ev["ts"] - start) / 1e9, 6)}) if json_output
                        else tracer.format(ev, start))
        finally:
            if kind == "syscalls":
                counts = tracer.counts(0)
                out(json.dumps(counts) if json_output else tracer.format_table(counts, top))
    if not scope.still_running():
        print(f"labctl: process {pid} has exited: the container is gone", file=sys.stderr, flush=True)
    print("labctl: detached", file=sys.stderr, flush=True)
    return 0


def trace_build(json_output: bool = False, debug: bool = False, out=print) -> int:
    """`labctl trace --build`: build a container (steps 1–3) under the build tracer and print the timeline."""
    from labctl.tracing import buildtrace
    calls, start = buildtrace.trace_construction(debug=debug)
    if json_output:
        for c in calls:
            out(json.dumps(c.as_dict(start)))
    else:
        for line in buildtrace.format_timeline(calls, start):
            out(line)
    return 0
