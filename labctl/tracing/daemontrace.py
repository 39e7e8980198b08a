"""Step 11's timeline: one `docker run` (or `labctl run` as a client) through labctl's daemon, from the
client's connect(2) on the daemon's Unix socket to the container's execve(2), traced in the kernel.

Four processes take part, none of them a child of the others but the last two:

    client (docker CLI)  connect("/run/labctl/labctl.sock")    the requests, one connection each
    daemon               accept4, recvfrom "POST /v1.41/containers/create", mount("overlay")
                         recvfrom "POST .../start", fork ─▶ helper ─fork─▶ supervisor (and exits)
    supervisor (shim)    unshare(CLONE_NEWPID|CLONE_NEWTIME), clone3 ─▶ PID 1
    PID 1                cgroup_attach_task (v1 hierarchies), unshare(NEWUTS|NEWIPC|NEWNS|NEWNET),
                         mount(...), pivot_root, execve("/bin/true")

The program follows a set of processes by their host PID (a BPF hash map Python seeds with the client's
PID, held back on a pipe until the tracer is attached, and the daemon's): sched:sched_process_fork adds
every child a followed process forks, before the child runs. Per event it records one line of context
in the kernel: the socket path of a connect (struct sockaddr_un), the first bytes a recvfrom returned
(the HTTP request line), the file system type and target of a mount, the path of an exec (from the
tracepoint's record), the cgroup of an attach. Which process plays which role is read afterwards from
the forks (daemontimeline.py); nothing in the daemon is changed to be traced.

The tracepoints, all stable ones (no kprobes: this kernel is built without them):
    syscalls:sys_enter_connect, sys_exit_accept4, sys_enter/exit_recvfrom   the HTTP conversation
    syscalls:sys_enter_clone, sys_enter_clone3, sched:sched_process_fork     new processes (not threads)
    syscalls:sys_enter_unshare, sys_enter_setns                             namespaces
    syscalls:sys_enter_mount, sys_enter_pivot_root                          the root filesystem
    cgroup:cgroup_attach_task                                               a process moved into a cgroup
    sched:sched_process_exec                                                a successful execve
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import time
from dataclasses import dataclass

from labctl.tracing.tracer import Tracer

PROGRAM = r"""
#define TEXT 128
enum { CONNECT = 1, ACCEPT, RECV, CLONE, FORK, UNSHARE, SETNS, MOUNT, PIVOT, ATTACH, EXEC };

struct event_t {
    u64 ts;
    u64 arg;             /* flags: clone, unshare, setns (nstype), mount; fd: accept */
    u32 pid;             /* host PID (thread group) */
    u32 tid;
    u32 other;           /* the child of a fork; the process moved by an attach */
    u32 kind;
    char comm[16];
    char text[TEXT];     /* socket path, request bytes, "fstype target", exec path, cgroup path */
};
BPF_HASH(followed, u32, u8, 4096);        /* host PIDs of the processes traced */
BPF_HASH(clone_flags, u32, u64, 1024);    /* thread -> flags of its clone in flight (for the fork) */
BPF_HASH(recv_buf, u32, u64, 1024);       /* thread -> user buffer of its recvfrom in flight */
BPF_PERCPU_ARRAY(scratch, struct event_t, 1);
BPF_RINGBUF_OUTPUT(events, 256);

static struct event_t *start(u32 kind)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 pid = id >> 32;
    if (!followed.lookup(&pid))
        return 0;
    int zero = 0;
    struct event_t *e = scratch.lookup(&zero);
    if (!e)
        return 0;
    e->ts = bpf_ktime_get_ns();
    e->pid = pid;
    e->tid = id;
    e->kind = kind;
    e->arg = 0;
    e->other = 0;
    e->text[0] = 0;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    return e;
}

static void send(struct event_t *e) { events.ringbuf_output(e, sizeof(*e), 0); }

TRACEPOINT_PROBE(syscalls, sys_enter_connect)
{
    struct event_t *e = start(CONNECT);
    u16 family = 0;
    if (!e || bpf_probe_read_user(&family, sizeof(family), args->uservaddr) || family != 1 /* AF_UNIX */)
        return 0;
    e->arg = args->fd;
    bpf_probe_read_user_str(e->text, TEXT, (char *)args->uservaddr + 2);   /* sockaddr_un.sun_path */
    send(e);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_accept4)
{
    struct event_t *e = start(ACCEPT);
    if (!e || args->ret < 0)
        return 0;
    e->arg = args->ret;
    send(e);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 pid = id >> 32, tid = id;
    u64 buf = (u64)args->ubuf;
    if (followed.lookup(&pid))
        recv_buf.update(&tid, &buf);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom)
{
    u32 tid = bpf_get_current_pid_tgid();
    u64 *buf = recv_buf.lookup(&tid);
    if (!buf)
        return 0;
    u64 at = *buf;
    recv_buf.delete(&tid);
    struct event_t *e = start(RECV);
    if (!e || args->ret <= 0)
        return 0;
    e->arg = args->ret;
    bpf_probe_read_user(e->text, TEXT - 1, (void *)at);   /* up to TEXT-1 bytes; Python cuts at ret */
    e->text[TEXT - 1] = 0;
    send(e);
    return 0;
}

static void note_clone(u64 flags)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 pid = id >> 32, tid = id;
    if (followed.lookup(&pid))
        clone_flags.update(&tid, &flags);
}

TRACEPOINT_PROBE(syscalls, sys_enter_clone) { note_clone(args->clone_flags); return 0; }

TRACEPOINT_PROBE(syscalls, sys_enter_clone3)
{
    u64 flags = 0;
    bpf_probe_read_user(&flags, sizeof(flags), args->uargs);   /* struct clone_args starts with flags */
    note_clone(flags);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_fork)
{
    u32 tid = bpf_get_current_pid_tgid();
    u64 *flags = clone_flags.lookup(&tid);
    u64 f = flags ? *flags : 0;
    clone_flags.delete(&tid);
    if (f & 0x00010000)                 /* CLONE_THREAD: a thread of the same process, not a new one */
        return 0;
    struct event_t *e = start(FORK);
    if (!e)
        return 0;
    u32 child = args->child_pid;
    u8 one = 1;
    followed.update(&child, &one);      /* before the child runs: nothing it does is missed */
    e->other = child;
    e->arg = f;
    send(e);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_unshare)
{
    struct event_t *e = start(UNSHARE);
    if (e) { e->arg = args->unshare_flags; send(e); }
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_setns)
{
    struct event_t *e = start(SETNS);
    if (e) { e->arg = args->flags; send(e); }
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_mount)
{
    struct event_t *e = start(MOUNT);
    if (!e)
        return 0;
    e->arg = args->flags;
    bpf_probe_read_user_str(e->text, 16, args->type);      /* "overlay", "proc", ...: text[0..15] */
    bpf_probe_read_user_str(&e->text[16], TEXT - 16, args->dir_name);   /* the target: text[16..] */
    send(e);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_pivot_root)
{
    struct event_t *e = start(PIVOT);
    if (e) { bpf_probe_read_user_str(e->text, TEXT, args->new_root); send(e); }
    return 0;
}

TRACEPOINT_PROBE(cgroup, cgroup_attach_task)
{
    u32 moved = args->pid;
    struct event_t *e = start(ATTACH);
    if (!e && !followed.lookup(&moved))
        return 0;
    if (!e) {            /* a process we follow, moved by someone else (e.g. the daemon writing its PID) */
        int zero = 0;
        e = scratch.lookup(&zero);
        if (!e)
            return 0;
        e->ts = bpf_ktime_get_ns();
        e->pid = moved;
        e->tid = bpf_get_current_pid_tgid();
        e->kind = ATTACH;
        e->arg = 0;
        bpf_get_current_comm(&e->comm, sizeof(e->comm));
    }
    e->other = moved;
    e->arg = args->dst_level;
    bpf_probe_read_kernel_str(e->text, TEXT, (void *)args + (args->data_loc_dst_path & 0xFFFF));
    send(e);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    struct event_t *e = start(EXEC);
    if (!e)
        return 0;
    bpf_probe_read_kernel_str(e->text, TEXT, (void *)args + (args->data_loc_filename & 0xFFFF));
    send(e);
    return 0;
}
"""

KINDS = {1: "connect", 2: "accept4", 3: "recvfrom", 4: "clone", 5: "fork", 6: "unshare", 7: "setns",
         8: "mount", 9: "pivot_root", 10: "cgroup_attach", 11: "execve"}


@dataclass
class Event:
    """One thing a followed process did, as the kernel saw it (ts: CLOCK_MONOTONIC ns)."""
    ts: int
    pid: int
    tid: int
    kind: str
    arg: int
    other: int
    comm: str
    text: str
    role: str = ""


class DaemonTracer(Tracer):
    """The program above: attach, then follow(pid) the client and the daemon."""
    NAME = "daemon-timeline"
    PROGRAM = PROGRAM
    TRACEPOINTS = {}          # TRACEPOINT_PROBE attaches itself when bcc loads the program
    RAW_FIELDS = ("text",)

    def follow(self, pid: int) -> None:
        self.bpf["followed"][ctypes.c_uint(pid)] = ctypes.c_ubyte(1)

    def event(self, raw: dict) -> Event:
        kind = KINDS.get(raw["kind"], str(raw["kind"]))
        text = raw["text"]
        if kind == "recvfrom":
            text = text[:raw["arg"]]
        else:
            text = text.split(b"\0", 1)[0] if kind != "mount" else \
                text[:16].split(b"\0", 1)[0] + b" " + text[16:].split(b"\0", 1)[0]
        return Event(raw["ts"], raw["pid"], raw["tid"], kind, raw["arg"], raw["other"], raw["comm"],
                     text.decode(errors="replace"))


@dataclass
class Traced:
    """What trace_client() saw: every event, the client's and the daemon's PID, the client's exit."""
    events: list[Event]
    client_pid: int
    daemon_pid: int
    socket: str
    status: int
    output: str


def trace_client(socket_path: str, argv: list[str], env: dict | None = None, debug: bool = False,
                 timeout: float = 60.0) -> Traced:
    """Run the client `argv` (e.g. docker run --rm busybox true, DOCKER_HOST in env) under DaemonTracer.

    The client is started by a shell that first reads one line from a pipe (its stdin) and then execs
    it: its PID is known, and followed, before it makes a single syscall of its own."""
    from labctl.daemon import control
    from labctl.errors import LabError
    daemon = control.running(socket_path)
    if not daemon:
        raise LabError(f"no daemon answers on {socket_path}", "`labctl daemon start` first")
    go_r, go_w = os.pipe()
    with DaemonTracer(debug=debug) as tracer:
        tracer.follow(daemon["pid"])
        proc = subprocess.Popen(["/bin/sh", "-c", 'read go && exec "$@"', "client", *argv], env=env,
                                stdin=go_r, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        os.close(go_r)
        try:
            tracer.follow(proc.pid)
            os.write(go_w, b"go\n")
            os.close(go_w)
            go_w = -1
            events = _collect(tracer, proc, timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
            raise
        finally:
            if go_w >= 0:
                os.close(go_w)
    return Traced(events, proc.pid, daemon["pid"], socket_path, proc.returncode, proc.stdout.read().decode(errors="replace"))


def _collect(tracer: DaemonTracer, proc: subprocess.Popen, timeout: float) -> list[Event]:
    """Events while the client runs, then what is left in the ring buffer once it has exited."""
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            from labctl.errors import LabError
            raise LabError(f"the traced client did not end within {timeout:.0f} s", "run it without the tracer")
        events += tracer.poll(20)
    return events + tracer.drain()
