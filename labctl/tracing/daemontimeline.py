"""daemontrace.py's events, read: who each process is, the one timeline from connect() to execve(), and
the phases between its landmarks.

Roles come from the forks alone, read in time order (the same rule as buildcalls.py's roles):
    client       the PID the tracer started, and anything it forks
    daemon       the daemon's PID (its threads share it: the kernel's thread group ID)
    helper       a process the daemon forks (the double fork's middle process; or a program it runs)
    supervisor   a process that unshared CLONE_NEWPID: the next child it forks is PID 1
    PID 1        that child: the container's first process; its own children are `container`

    timeline(traced)  [Step(t_ms since the client's first connect to the socket, role, pid, event)],
                      ending at PID 1's execve
    phases(steps)     [(phase, ms)] between the landmarks below, those the trace holds
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from labctl.tracing.buildcalls import CLONE_FLAGS, MOUNT_FLAGS, decode_flags
from labctl.tracing.daemontrace import Event, Traced

CLONE_NEWPID = 0x20000000
REQUEST = re.compile(r"^(GET|HEAD|POST|PUT|DELETE) (\S+) HTTP/1\.[01]")


@dataclass
class Step:
    ms: float
    role: str
    pid: int
    event: str
    kind: str = ""

    def as_tuple(self) -> tuple[float, str, int, str]:
        return self.ms, self.role, self.pid, self.event


def roles(events: list[Event], client_pid: int, daemon_pid: int) -> dict[int, str]:
    """host PID -> role (the module docstring), from the forks and unshares in time order."""
    found = {client_pid: "client", daemon_pid: "daemon"}
    unshared: set[int] = set()
    for e in sorted(events, key=lambda e: e.ts):
        if e.kind == "unshare" and e.arg & CLONE_NEWPID:
            unshared.add(e.pid)
        elif e.kind == "fork":
            parent = found.get(e.pid, "")
            if e.pid in unshared:
                found[e.pid], found[e.other] = "supervisor", "PID 1"
                unshared.discard(e.pid)            # only its next child is PID 1
            else:
                found[e.other] = {"client": "client", "daemon": "helper", "PID 1": "container",
                                  "container": "container"}.get(parent, f"child of {parent or e.pid}")
    return found


def describe(e: Event) -> str | None:
    """The event as one line, or None for one that is not part of the story."""
    if e.kind == "connect":
        return f'connect({e.arg}, "{e.text}")'
    if e.kind == "accept4":
        return f"accept4() = {e.arg}: a new connection"
    if e.kind == "recvfrom":
        first = e.text.split("\r\n", 1)[0]
        m = REQUEST.match(first)
        return f"recvfrom() = {e.arg}: {m[1]} {_short(m[2])}" if m else None
    if e.kind == "fork":
        return f"fork() = {e.other}  ({decode_flags(e.arg, CLONE_FLAGS, rest_as_signal=True)})"
    if e.kind == "unshare":
        return f"unshare({decode_flags(e.arg, CLONE_FLAGS)})"
    if e.kind == "setns":
        return f"setns(fd, {decode_flags(e.arg, CLONE_FLAGS)})"
    if e.kind == "mount":
        fstype, _, target = e.text.partition(" ")
        return f'mount({fstype or "NULL"}, "{_short(target)}", {decode_flags(e.arg, MOUNT_FLAGS)})'
    if e.kind == "pivot_root":
        return f'pivot_root("{e.text}", ...)'
    if e.kind == "cgroup_attach":
        return f"cgroup_attach_task: PID {e.other} -> {e.text or '/'}"
    if e.kind == "execve":
        return f'execve("{e.text}")'
    return None


def _short(path: str) -> str:
    """/v1.41/containers/<64 hex>/start?x=1 -> /v1.41/containers/<12 hex>/start (also a path with an ID)"""
    return "/".join(p[:12] if len(p) == 64 else p for p in path.split("?")[0].split("/"))


def timeline(traced: Traced) -> list[Step]:
    """From the client's first connect() to the daemon's socket to PID 1's first execve, in time order.
    Empty if the trace has no such connect; open-ended if no PID 1 exec'd."""
    named = roles(traced.events, traced.client_pid, traced.daemon_pid)
    events = sorted(traced.events, key=lambda e: e.ts)
    start = next((e for e in events if e.kind == "connect" and e.pid == traced.client_pid
                  and e.text == traced.socket), None)
    if start is None:
        return []
    steps = []
    for e in events[events.index(start):]:
        if e.kind == "connect" and e.text != traced.socket:
            continue                  # another socket (e.g. a resolver's): not the daemon's
        text = describe(e)
        if text is None:
            continue
        role = named.get(e.pid, f"pid {e.pid}")
        steps.append(Step(round((e.ts - start.ts) / 1e6, 3), role, e.pid, text, e.kind))
        if e.kind == "execve" and role == "PID 1":
            break
    return steps


#: The landmarks, in order: (name, test on a step). A phase is the time from one landmark to the next.
LANDMARKS = [
    ("connect", lambda s: s.kind == "connect" and s.role == "client"),
    ("create request", lambda s: s.role == "daemon" and s.kind == "recvfrom" and "/containers/create" in s.event),
    ("start request", lambda s: s.role == "daemon" and s.kind == "recvfrom" and s.event.endswith("/start")),
    ("daemon forks", lambda s: s.role == "daemon" and s.kind == "fork"),
    ("PID 1 forked", lambda s: s.role == "supervisor" and s.kind == "fork"),
    ("pivot_root", lambda s: s.role == "PID 1" and s.kind == "pivot_root"),
    ("execve", lambda s: s.role == "PID 1" and s.kind == "execve"),
]
PHASES = {"connect": "client: connect to create request", "create request": "create (image, overlay rootfs)",
          "start request": "start: daemon to fork", "daemon forks": "helper, supervisor: namespaces",
          "PID 1 forked": "PID 1: cgroups, namespaces, mounts", "pivot_root": "PID 1: pivot_root to execve"}


def landmarks(steps: list[Step]) -> list[tuple[str, Step]]:
    """Each landmark's first step, in order, each after the one before (a missing one is skipped)."""
    found, at = [], 0
    for name, test in LANDMARKS:
        hit = next((i for i in range(at, len(steps)) if test(steps[i])), None)
        if hit is not None:
            found.append((name, steps[hit]))
            at = hit
    return found


def phases(steps: list[Step]) -> list[tuple[str, float]]:
    """[(phase, ms)]: from each landmark to the next one found."""
    marks = landmarks(steps)
    order = [name for name, _ in LANDMARKS]
    return [(PHASES[a] if order.index(b) == order.index(a) + 1 else f"{a} to {b}", round(sb.ms - sa.ms, 3))
            for (a, sa), (b, sb) in zip(marks, marks[1:])]


def format_timeline(steps: list[Step]) -> list[str]:
    return [f"{s.ms:9.3f} ms  {s.role:<10} {s.pid:>7}  {s.event}" for s in steps]
