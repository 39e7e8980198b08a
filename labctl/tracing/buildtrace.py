"""Watch a container being built: the syscalls the lab itself makes, as an annotated timeline.

The construction is steps 1-3's: a cgroup with a memory limit (when labctl.kernel.cgroups and the memory
controller are there), new namespaces, the busybox root filesystem and pivot_root.

    labctl trace --build
      +3.4 ms  labctl    mkdir("/sys/fs/cgroup/memory/.../labctl/trace-build-4300") = 0  step 3
      +4.1 ms  labctl    write(4 /* memory/.../memory.limit_in_bytes */, "67108864", 8) = 8
      +4.2 ms  labctl    clone(SIGCHLD) = 4301                                   step 1
      +0.4 ms  helper    unshare(CLONE_NEWNS|CLONE_NEWUTS|CLONE_NEWIPC|CLONE_NEWPID) = 0
                         └ new namespaces for this process (PID: for its next child)
      +0.6 ms  helper    clone(SIGCHLD) = 4302   └ this child is PID 1 of the new PID namespace
      +0.9 ms  PID 1     sethostname("lab-build") = 0                            step 1
      +1.1 ms  PID 1     mount(none, "/", none, MS_REC|MS_PRIVATE) = 0           step 2
      ...
      +3.0 ms  PID 1     pivot_root(".", ".") = 0                                step 2

The builder runs in a child process that waits until the tracer is attached. The program follows
that process and every descendant (sched:sched_process_fork adds each child to a map) and records
the syscalls on a list (raw_syscalls:sys_enter, with the string arguments copied from user memory)
together with their return value (raw_syscalls:sys_exit). Which syscalls, and which of their
arguments are strings, is a map Python fills: the C does not need to know syscall numbers.
What each recorded call meant for the container is buildcalls.py's part.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import time

from labctl.tracing.buildcalls import Call, annotate
from labctl.tracing.syscount import syscall_name, syscall_number
from labctl.tracing.tracer import Tracer

PROGRAM = r"""
#define NARGS 5          /* arguments kept (mount has five) */
#define STRLEN 160       /* bytes kept per string argument */
#define DEREF_ARG0 (1 << 8)   /* arg 0 points to a u64 to copy (clone3's struct clone_args.flags) */

struct call_t {
    u64 ts;              /* entry */
    u64 duration;        /* exit - entry, in ns */
    s64 ret;
    u32 pid;             /* host PID (thread group) */
    u32 nr;              /* syscall number */
    u64 args[NARGS];
    u64 deref;           /* *(u64 *)args[0], for DEREF_ARG0 */
    char comm[16];
    char str[NARGS * STRLEN];   /* string argument i at str[i * STRLEN] */
};
BPF_HASH(tree, u32, u8, 4096);              /* the lab's process tree: host PIDs */
BPF_HASH(wanted, u32, u32, 64);             /* syscall nr -> bit i set: argument i is a string */
BPF_HASH(inflight, u32, struct call_t, 1024);   /* thread -> call waiting for its return value */
BPF_PERCPU_ARRAY(scratch, struct call_t, 1);
BPF_RINGBUF_OUTPUT(calls, 256);

int lab_build_fork(struct tracepoint__sched__sched_process_fork *args)
{
    u32 parent = bpf_get_current_pid_tgid() >> 32;
    if (!tree.lookup(&parent))
        return 0;
    u32 child = args->child_pid;
    u8 one = 1;
    tree.update(&child, &one);           /* before the child runs: nothing it does is missed */
    return 0;
}

int lab_build_enter(struct tracepoint__raw_syscalls__sys_enter *args)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 pid = id >> 32, tid = id;
    if (!tree.lookup(&pid))
        return 0;
    u32 nr = args->id;
    u32 *mask = wanted.lookup(&nr);
    if (!mask)
        return 0;
    int zero = 0;
    struct call_t *c = scratch.lookup(&zero);
    if (!c)
        return 0;
    c->ts = bpf_ktime_get_ns();
    c->duration = 0;
    c->ret = 0;
    c->pid = pid;
    c->nr = nr;
    c->deref = 0;
    bpf_get_current_comm(&c->comm, sizeof(c->comm));
    #pragma unroll
    for (int i = 0; i < NARGS; i++) {
        c->args[i] = args->args[i];
        c->str[i * STRLEN] = 0;
        if ((*mask >> i) & 1)
            bpf_probe_read_user_str(&c->str[i * STRLEN], STRLEN, (void *)args->args[i]);
    }
    if (*mask & DEREF_ARG0)
        bpf_probe_read_user(&c->deref, sizeof(c->deref), (void *)args->args[0]);
    inflight.update(&tid, c);
    return 0;
}

int lab_build_exit(struct tracepoint__raw_syscalls__sys_exit *args)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct call_t *c = inflight.lookup(&tid);
    if (!c)
        return 0;
    c->ret = args->ret;
    c->duration = bpf_ktime_get_ns() - c->ts;
    calls.ringbuf_output(c, sizeof(*c), 0);
    inflight.delete(&tid);
    return 0;
}
"""

NARGS, STRLEN = 5, 160
DEREF_ARG0 = 1 << 8

#: The syscalls recorded, and which of their arguments (by position) are strings.
RECORDED = {
    "clone": (), "clone3": ("deref",), "fork": (), "vfork": (), "unshare": (), "setns": (),
    "sethostname": (0,), "mount": (0, 1, 2, 4), "umount2": (0,), "pivot_root": (0, 1), "chroot": (0,),
    "chdir": (0,), "mknodat": (1,), "mknod": (0,), "socket": (), "openat": (1,), "write": (1,),
    "mkdir": (0,), "mkdirat": (1,), "rmdir": (0,), "close": (), "execve": (0,),
}


class BuildTracer(Tracer):
    """Records the RECORDED syscalls of one process and all its descendants."""
    NAME = "build"
    PROGRAM = PROGRAM
    TRACEPOINTS = {
        "sched:sched_process_fork": "lab_build_fork",
        "raw_syscalls:sys_enter": "lab_build_enter",
        "raw_syscalls:sys_exit": "lab_build_exit",
    }
    EVENTS_MAP = "calls"
    RAW_FIELDS = ("str",)

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        wanted = self.bpf["wanted"]
        self.names: dict[int, str] = {}
        for name, string_args in RECORDED.items():
            try:
                nr = syscall_number(name)
            except KeyError:
                continue          # not on this architecture (e.g. mknod on arm64)
            mask = sum(1 << i for i in string_args if isinstance(i, int))
            if "deref" in string_args:
                mask |= DEREF_ARG0
            wanted[ctypes.c_uint(nr)] = ctypes.c_uint(mask)
            self.names[nr] = name

    def follow(self, pid: int) -> None:
        """Record this process and, from now on, every process it starts."""
        self.bpf["tree"][ctypes.c_uint(pid)] = ctypes.c_ubyte(1)

    def event(self, raw: dict) -> Call:
        flat = raw["str"]
        strings = [flat[i * STRLEN:(i + 1) * STRLEN].split(b"\0", 1)[0].decode(errors="replace")
                   for i in range(NARGS)]
        return Call(raw["ts"], raw["pid"], raw["comm"], self.names.get(raw["nr"], syscall_name(raw["nr"])),
                    raw["ret"], list(raw["args"]), strings, raw["deref"], raw["duration"])


def run_construction(hostname: str = "lab-build", command: tuple[str, ...] = ("/bin/true",),
                     memory_limit_bytes: int | None = 64 << 20) -> None:
    """Step 1–3's container construction: a cgroup with a memory limit (step 3, when this machine
    has the memory controller), new namespaces (step 1), the busybox root filesystem with
    pivot_root (step 2), then exec `command` as PID 1. Returns when the container has exited."""
    from labctl.images import labimage
    from labctl.kernel import namespaces, rootfs
    root = labimage.ensure_busybox_rootfs()
    options = dict(hostname=hostname, setup=lambda: rootfs.setup_container_root(root), what="traced construction")
    cgroup = None
    if memory_limit_bytes:
        try:
            from labctl.kernel import cgroups
            cgroup = cgroups.Cgroup.create(f"trace-build-{os.getpid()}", cgroups.Limits(memory_bytes=memory_limit_bytes))
        except Exception:   # no labctl.kernel.cgroups, or no memory controller here: build without a cgroup
            cgroup = None
    try:
        proc = cgroup.spawn(["/bin/true"] if not command else list(command), **options) if cgroup \
            else namespaces.spawn(list(command), **options)
        proc.wait(timeout=30)
    finally:
        if cgroup:
            cgroup.remove()


def trace_construction(hostname: str = "lab-build", command: tuple[str, ...] = ("/bin/true",),
                       debug: bool = False, build=None) -> tuple[list[Call], int]:
    """Build a container (run_construction, or the callable `build`, e.g. step 7's `labctl run`) in a
    child process under BuildTracer; returns (annotated calls, start ns).

    The child is forked first and waits on a pipe, so the tracer is attached and following it
    before it makes its first syscall of the construction."""
    from labctl.images import labimage  # noqa: F401  (imported before the trace:
    from labctl.kernel import namespaces, rootfs
    from labctl import state
    with contextlib.suppress(ImportError):
        from labctl.kernel import cgroups  # noqa: F401
    labimage.ensure_busybox_rootfs()        # ctypes finds libc by running ldconfig; not the container's work)
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    builder = os.fork()
    if builder == 0:
        status = 1
        try:
            os.close(go_w)
            os.close(done_r)
            if os.read(go_r, 1) == b"g":
                build() if build else run_construction(hostname, command)
                status = 0
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.write(done_w, str(exc).encode()[:1000])
        finally:
            os._exit(status)
    os.close(go_r)
    os.close(done_w)
    rec = state.record_process(builder, "traced construction (builder)")
    try:
        with BuildTracer(debug=debug) as tracer:
            tracer.follow(builder)
            start = time.monotonic_ns()
            os.write(go_w, b"g")
            os.close(go_w)
            go_w = -1
            calls, status = _collect_until_exit(tracer, builder)
            error = os.read(done_r, 1000).decode(errors="replace")
        if status != 0:
            from labctl.errors import LabError
            raise LabError(f"building the traced container failed: {error or 'status ' + str(status)}",
                           "run `labctl step 2` to see the construction without the tracer")
    except BaseException:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(builder, 9)
            os.waitpid(builder, 0)
        raise
    finally:
        rec.forget()
        os.close(done_r)
        if go_w >= 0:
            os.close(go_w)
    return annotate(calls, builder), start


def _collect_until_exit(tracer: BuildTracer, pid: int) -> tuple[list[Call], int]:
    """Read the ring buffer while the builder runs (a long build, e.g. `labctl run` importing Python
    modules, fills it: the kernel drops what does not fit), then what is left once it has exited."""
    calls: list[Call] = []
    while True:
        calls += tracer.poll(20)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return calls + tracer.drain(), status


def format_timeline(calls: list[Call], start_ns: int) -> list[str]:
    """Two lines a call: when, who, the call as C (and how long the kernel took, when that is long);
    then what it did, and the step of the course that explains it."""
    from labctl.steps import CURRICULUM
    lines = []
    for c in calls:
        step = CURRICULUM[c.step - 1] if c.step else None
        link = f"step {step.number} ({step.slug})" if step else ""
        took = f"   ({c.duration / 1e6:.1f} ms)" if c.duration >= 500_000 else ""
        lines.append(f"{(c.ts - start_ns) / 1e6:+8.2f} ms  {c.role:<8} {c.text}{took}")
        lines.append(f"{'':>12}  {'':<8} └ {c.why}" + (f"   [{link}: labctl step {step.number}, "
                                                       f"lab/{step.lab_dir.name}/]" if step else ""))
    return lines
