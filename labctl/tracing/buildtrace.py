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
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import time
from dataclasses import dataclass, field

from labctl.tracing import Tracer
from labctl.tracing.syscount import syscall_name, syscall_number

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

# Flag names, from <linux/sched.h>, <linux/mount.h> and <linux/fs.h>.
CLONE_FLAGS = [(0x00000100, "CLONE_VM"), (0x00000200, "CLONE_FS"), (0x00000400, "CLONE_FILES"),
               (0x00000800, "CLONE_SIGHAND"), (0x00004000, "CLONE_VFORK"), (0x00010000, "CLONE_THREAD"),
               (0x00020000, "CLONE_NEWNS"), (0x00200000, "CLONE_CHILD_CLEARTID"),
               (0x01000000, "CLONE_CHILD_SETTID"), (0x02000000, "CLONE_NEWCGROUP"),
               (0x04000000, "CLONE_NEWUTS"), (0x08000000, "CLONE_NEWIPC"), (0x10000000, "CLONE_NEWUSER"),
               (0x20000000, "CLONE_NEWPID"), (0x40000000, "CLONE_NEWNET"), (0x00000080, "CLONE_NEWTIME")]
NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | \
    0x40000000 | 0x00000080
MOUNT_FLAGS = [(0x1, "MS_RDONLY"), (0x2, "MS_NOSUID"), (0x4, "MS_NODEV"), (0x8, "MS_NOEXEC"),
               (0x20, "MS_REMOUNT"), (0x1000, "MS_BIND"), (0x2000, "MS_MOVE"), (0x4000, "MS_REC"),
               (1 << 17, "MS_UNBINDABLE"), (1 << 18, "MS_PRIVATE"), (1 << 19, "MS_SLAVE"), (1 << 20, "MS_SHARED")]
UMOUNT_FLAGS = [(0x1, "MNT_FORCE"), (0x2, "MNT_DETACH"), (0x4, "MNT_EXPIRE"), (0x8, "UMOUNT_NOFOLLOW")]
SOCKET_FAMILIES = {1: "AF_UNIX", 2: "AF_INET", 10: "AF_INET6", 16: "AF_NETLINK", 17: "AF_PACKET"}
NETLINK_PROTOCOLS = {0: "NETLINK_ROUTE", 12: "NETLINK_NETFILTER", 16: "NETLINK_GENERIC"}
CGROUP_ROOT = "/sys/fs/cgroup"


def decode_flags(value: int, table: list[tuple[int, str]], rest_as_signal: bool = False) -> str:
    names = [name for bit, name in table if value & bit]
    rest = value & ~sum(bit for bit, _ in table)
    if rest:
        if rest_as_signal and rest < 65:
            import signal
            with contextlib.suppress(ValueError):
                names.append(signal.Signals(rest).name)
                rest = 0
        if rest:
            names.append(hex(rest))
    return "|".join(names) or "0"


@dataclass
class Call:
    """One recorded syscall of the lab's process tree."""
    ts: int
    pid: int
    comm: str
    name: str
    ret: int
    args: list[int]
    strings: list[str]
    deref: int = 0
    duration: int = 0       # ns from entry to return
    role: str = ""
    text: str = ""          # the call as it would be written in C
    step: int = 0           # the curriculum step that explains it
    why: str = ""           # one line: what this call did for the container
    extra: dict = field(default_factory=dict)

    def as_dict(self, start_ns: int) -> dict:
        return {"ms": round((self.ts - start_ns) / 1e6, 3), "took_ms": round(self.duration / 1e6, 3),
                "pid": self.pid, "role": self.role,
                "comm": self.comm, "syscall": self.name, "call": self.text, "ret": self.ret,
                "step": self.step, "why": self.why}


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


def _ret(call: Call) -> str:
    if call.ret < 0:
        return f"-1 {os.strerror(-call.ret)}"
    return str(call.ret)


def _s(text: str) -> str:
    return f'"{text}"'


def annotate(calls: list[Call], root_pid: int) -> list[Call]:
    """Keep the calls that build the container, and write each as C with its meaning and its step.

    Roles: `labctl` is the builder process; a process it forks is the `helper` that unshares; a
    child the helper forks after unshare(CLONE_NEWPID) is `PID 1` of the container.
    """
    roles = {root_pid: "labctl"}
    new_pid_ns: set[int] = set()
    cgroup_fds: dict[tuple[int, int], str] = {}
    kept: list[Call] = []
    for c in sorted(calls, key=lambda c: c.ts):
        c.role = roles.get(c.pid, f"pid {c.pid}")
        a, s = c.args, c.strings
        if c.name in ("clone", "clone3", "fork", "vfork"):
            flags = c.deref if c.name == "clone3" else (a[0] if c.name == "clone" else 0)
            if c.ret > 0:
                if c.pid in new_pid_ns:
                    roles[c.ret] = "PID 1"
                    c.why = "this child is PID 1 of the new PID namespace (unshare made it the next child's)"
                elif c.role == "labctl":
                    roles[c.ret] = "helper"
                    c.why = "a helper process that will unshare and wait for the container"
                else:
                    roles[c.ret] = f"child of {c.role}"
                    c.why = "a new process"
            c.text = f"{c.name}({decode_flags(flags, CLONE_FLAGS, rest_as_signal=True)})"
            if flags & NAMESPACE_FLAGS:
                c.why = "a new process in new namespaces"
            c.step = 1
        elif c.name == "unshare":
            c.text = f"unshare({decode_flags(a[0], CLONE_FLAGS)})"
            c.why = "new namespaces for this process" + (" (PID: for its next child)" if a[0] & 0x20000000 else "")
            if a[0] & 0x20000000 and c.ret == 0:
                new_pid_ns.add(c.pid)
            c.step = 1
        elif c.name == "setns":
            c.text = f"setns({a[0]}, {decode_flags(a[1], CLONE_FLAGS)})"
            c.why, c.step = "join an existing namespace through its /proc/<pid>/ns file", 1
        elif c.name == "sethostname":
            c.text = f"sethostname({_s(s[0])}, {a[1]})"
            c.why, c.step = "the container's own hostname, in its new UTS namespace", 1
        elif c.name == "mount":
            src = _s(s[0]) if a[0] else "NULL"
            fstype = _s(s[2]) if a[2] else "NULL"
            data = f", {_s(s[4])}" if a[4] and s[4] else ""
            c.text = f"mount({src}, {_s(s[1])}, {fstype}, {decode_flags(a[3], MOUNT_FLAGS)}{data})"
            c.why, c.step = _why_mount(s[0] if a[0] else "", s[1], s[2] if a[2] else "", a[3])
        elif c.name == "umount2":
            c.text = f"umount2({_s(s[0])}, {decode_flags(a[1], UMOUNT_FLAGS)})"
            c.why, c.step = "detach the old root, stacked under the new one: no path leads to the host", 2
            if c.duration > 2_000_000:
                c.why += " (the kernel waits for an RCU grace period before it returns)"
        elif c.name == "pivot_root":
            c.text = f"pivot_root({_s(s[0])}, {_s(s[1])})"
            c.why, c.step = "the container's root filesystem becomes / (the old root goes beneath it)", 2
        elif c.name == "chroot":
            c.text = f"chroot({_s(s[0])})"
            c.why, c.step = "change the root directory only (escapable: step 2 shows how)", 2
        elif c.name == "chdir":
            c.text = f"chdir({_s(s[0])})"
            c.why, c.step = ("step into the new root", 2) if s[0] == "/" else \
                ("pivot_root works on the current directory", 2)
            if not (s[0] == "/" or (kept and kept[-1].name == "mount")):
                continue
        elif c.name in ("mknodat", "mknod"):
            path = s[1] if c.name == "mknodat" else s[0]
            mode, dev = (a[2], a[3]) if c.name == "mknodat" else (a[1], a[2])
            c.text = f"{c.name}({_s(path)}, S_IFCHR|{mode & 0o777:o}, makedev({os.major(dev)}, {os.minor(dev)}))"
            c.why, c.step = f"device node {os.path.basename(path)} in the container's own /dev", 2
        elif c.name == "socket":
            family = SOCKET_FAMILIES.get(a[0], str(a[0]))
            if family != "AF_NETLINK":
                continue
            c.text = f"socket(AF_NETLINK, {a[1]}, {NETLINK_PROTOCOLS.get(a[2], a[2])})"
            c.why, c.step = "talk to the kernel's network stack (links, addresses, routes)", 6
        elif c.name == "close":
            cgroup_fds.pop((c.pid, a[0]), None)   # so a later file on the same number is not taken for it
            continue
        elif c.name == "openat":
            if c.ret >= 0:
                cgroup_fds.pop((c.pid, c.ret), None)
            if not s[1].startswith(CGROUP_ROOT) or c.ret < 0:
                continue
            cgroup_fds[(c.pid, c.ret)] = s[1]
            if not (a[2] & (os.O_WRONLY | os.O_RDWR)):
                continue
            c.text = f"openat(AT_FDCWD, {_s(s[1])}, O_WRONLY)"
            c.why, c.step = "a cgroup control file, opened to write one value", 3
            continue   # the write that follows says what was written, and where
            c.why, c.step = "a cgroup file: the container's limits and membership", 3
        elif c.name == "write":
            path = cgroup_fds.get((c.pid, a[0]))
            if path is None:
                continue
            value = s[1][:a[2]]
            c.text = f"write({a[0]} /* {_cgroup_relative(path)} */, {_s(value)}, {a[2]})"
            name = os.path.basename(path)
            c.why = f"move process {value} into the cgroup" if name in ("cgroup.procs", "tasks") \
                else f"set {name} of the container's cgroup"
            c.step = 3
        elif c.name in ("mkdir", "mkdirat", "rmdir"):
            path = s[1] if c.name == "mkdirat" else s[0]
            if not path.startswith(CGROUP_ROOT):
                continue
            c.text = f"{c.name}({_s(path)})"
            c.why = ("a new cgroup is a new directory in the hierarchy" if c.name != "rmdir"
                     else "an empty cgroup is removed with rmdir")
            c.step = 3
        elif c.name == "execve":
            if c.ret == -2:
                continue          # execvp trying each directory of $PATH
            c.text = f"execve({_s(s[0])}, ...)"
            c.why, c.step = f"{c.role} becomes the container's program" if c.role == "PID 1" \
                else "run a program", 1
        else:
            continue
        c.text = f"{c.text} = {_ret(c)}"
        kept.append(c)
    return kept


def _cgroup_relative(path: str) -> str:
    """/sys/fs/cgroup/memory/x/labctl/y/memory.max -> memory/.../y/memory.max (short enough to read)."""
    parts = path[len(CGROUP_ROOT):].strip("/").split("/")
    return "/".join(parts[:1] + (["..."] if len(parts) > 3 else []) + parts[-2:]) if len(parts) > 1 else path


def _why_mount(source: str, target: str, fstype: str, flags: int) -> tuple[str, int]:
    if flags & (1 << 18) and target == "/":
        return "stop mount events propagating to and from the host (MS_PRIVATE)", 2
    if flags & 0x20 and flags & 0x1:
        return "remount read-only: the shared lab image stays unchanged", 2
    if flags & 0x1000:
        return "bind the root filesystem onto itself: pivot_root needs a mount point", 2
    explain = {"proc": "a /proc for the new PID namespace: ps inside shows only the container",
               "tmpfs": "an empty in-memory file system (a minimal /dev, /dev/shm or /tmp)",
               "devpts": "the container's own pseudo-terminals (newinstance)",
               "sysfs": "/sys, read-only", "overlay": "the image's layers stacked into one root (OverlayFS)",
               "cgroup2": "the cgroup file system", "cgroup": "a cgroup v1 hierarchy"}
    step = 4 if fstype == "overlay" else 3 if fstype.startswith("cgroup") else 2
    return explain.get(fstype, f"a {fstype or 'bind'} mount"), step


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
                       debug: bool = False) -> tuple[list[Call], int]:
    """Build a container (run_construction) in a child process under BuildTracer; returns
    (annotated calls, start ns).

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
                run_construction(hostname, command)
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
            _, status = os.waitpid(builder, 0)
            error = os.read(done_r, 1000).decode(errors="replace")
            calls = tracer.drain()
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


def format_timeline(calls: list[Call], start_ns: int) -> list[str]:
    from labctl.steps import CURRICULUM
    lines = []
    for c in calls:
        step = CURRICULUM[c.step - 1] if c.step else None
        link = f"step {step.number} ({step.slug})" if step else ""
        took = f"   ({c.duration / 1e6:.1f} ms)" if c.duration >= 500_000 else ""
        lines.append(f"{(c.ts - start_ns) / 1e6:+8.2f} ms  {c.role:<8} {c.text}{took}")
        lines.append(f"{'':>12}  {'':<8} └ {c.why}" + (f"   [{link}: labctl step {step.number}, "
                                                       f"lab/{step.number:02d}-{step.slug}/]" if step else ""))
    return lines
