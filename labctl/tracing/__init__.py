"""Step 8: eBPF tracing with bcc, on tracepoints, scoped to one container.

Each tracer is one module here, in the style of bcc's tools/: the BPF C program in one commented raw
string beside the Python that loads it.

    execsnoop.py   sched:sched_process_fork/exec/exit (+ syscalls:sys_enter_execve for argv)
    opensnoop.py   syscalls:sys_enter_openat / sys_exit_openat
    syscount.py    raw_syscalls:sys_enter, counted in the kernel
    tcpstates.py   sock:inet_sock_set_state
    oomkill.py     oom:mark_victim
    buildtrace.py  raw_syscalls:sys_enter/exit of the lab's own process tree: a container being built

Why tracepoints and not kprobes: a tracepoint is a stable hook the kernel developers maintain, its
arguments are described in /sys/kernel/tracing/events/<category>/<event>/format (bcc reads that file,
so the program fits the running kernel), and it exists on kernels built without kprobes, like this one.

How a program knows which container it is in: a container is, first of all, a PID namespace. The
helper bpf_get_ns_current_pid_tgid(dev, ino, ...) succeeds only when the current task lives in the PID
namespace whose nsfs file (/proc/<pid>/ns/pid) has that device and inode, and then tells the task's
PID *inside* it. No kernel struct is read, so the program does not depend on the layout of
task_struct (the headers linked on this machine are 6.1's, the kernel is newer). On cgroup v2 the
scope can also require a cgroup id (bpf_get_current_cgroup_id), which is the inode of the cgroup's
directory in the cgroup2 file system.

The scope lives in a BPF map written after the program is loaded: one compiled program can watch up
to MAX_SCOPES containers side by side, or be pointed at another container without compiling again.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from labctl.errors import LabError, MissingRequirementError

TRACEFS = "/sys/kernel/tracing"
MAX_SCOPES = 4
#: Every program the lab loads is named lab_*: `bpftool prog show` tells them apart from others'.
PROGRAM_PREFIX = "lab_"

# The scope test every tracer includes. bcc compiles this C with clang when the Python object is made.
SCOPE_C = r"""
#define MAX_SCOPES %(max_scopes)d
/* One watched container: its PID namespace (device and inode of /proc/PID/ns/pid), and on cgroup v2
 * optionally its cgroup id. Python fills this map after loading; a zero entry is unused. */
struct scope_t {
    u64 pidns_dev;
    u64 pidns_ino;
    u64 cgroup_id;
};
BPF_ARRAY(scopes, struct scope_t, MAX_SCOPES);

/* Which watched container the current task belongs to (its slot), or -1 for none.
 * On success ns->pid and ns->tgid are the task's thread and process IDs inside the container. */
static __always_inline int scope_slot(struct bpf_pidns_info *ns)
{
    #pragma unroll
    for (int i = 0; i < MAX_SCOPES; i++) {
        int key = i;
        struct scope_t *s = scopes.lookup(&key);
        if (!s || (s->pidns_ino == 0 && s->cgroup_id == 0))
            continue;
        if (s->cgroup_id && bpf_get_current_cgroup_id() != s->cgroup_id)
            continue;
        if (s->pidns_ino == 0)
            return i;                      /* scoped by cgroup only */
        /* 0 only when the task's own PID namespace is this one: no struct offsets needed */
        if (bpf_get_ns_current_pid_tgid(s->pidns_dev, s->pidns_ino, ns, sizeof(*ns)) == 0)
            return i;
    }
    return -1;
}
""" % {"max_scopes": MAX_SCOPES}


# ---------------------------------------------------------------------------------------------
# Which container: a PID (or a name, through a pluggable lookup) -> its PID namespace.


@dataclass(frozen=True)
class Scope:
    """One container, as the BPF programs recognise it."""
    pid: int                 # a process of the container, as the host sees it
    pidns_dev: int           # st_dev of /proc/<pid>/ns/pid (the nsfs device)
    pidns_ino: int           # st_ino of /proc/<pid>/ns/pid: the PID namespace's inode
    cgroup_id: int = 0       # on cgroup v2: the inode of its cgroup directory; 0 = any cgroup
    label: str = ""

    @classmethod
    def of_pid(cls, pid: int, by_cgroup: bool = False, label: str = "", allow_host: bool = False) -> "Scope":
        """The scope of the container that process `pid` is in (stat(2) of /proc/<pid>/ns/pid)."""
        try:
            st = os.stat(f"/proc/{pid}/ns/pid")
        except FileNotFoundError:
            raise LabError(f"no process {pid}", "give the host PID of a process in the container "
                           "(`labctl run` prints it; `ps -e -o pid,pidns,cmd` lists them)") from None
        except OSError as exc:
            raise LabError(f"cannot read /proc/{pid}/ns/pid: {exc.strerror}",
                           "give the PID of a process the lab started, and run as root") from None
        if not allow_host and st.st_ino == os.stat("/proc/self/ns/pid").st_ino:
            raise LabError(f"PID {pid} is in the host's PID namespace, not in a container",
                           "give the PID of the container's PID 1 or a process inside it "
                           "(`ps -e -o pid,pidns,cmd` shows each process's PID namespace)")
        cgroup_id = cgroup_v2_id(pid) if by_cgroup else 0
        return cls(pid, st.st_dev, st.st_ino, cgroup_id, label or f"pid {pid}")

    def member_pids(self) -> list[int]:
        """Host PIDs of the processes in this PID namespace now (what the kernel side sees as ours)."""
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if os.stat(f"/proc/{entry}/ns/pid").st_ino == self.pidns_ino:
                        pids.append(int(entry))
        return sorted(pids)


def cgroup2_mount() -> str | None:
    """Where the cgroup2 file system is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            if right.split()[0] == "cgroup2":
                return left.split()[4]
    return None


def cgroup_v2_id(pid: int) -> int:
    """The cgroup id bpf_get_current_cgroup_id() returns for `pid`: the inode of its cgroup2 directory."""
    mount = cgroup2_mount()
    if mount is None:
        raise LabError("this machine has no cgroup2 file system: a cgroup id scope needs cgroup v2",
                       "scope by PID namespace only (drop --cgroup)")
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return os.stat(mount + line[3:].strip()).st_ino
    raise LabError(f"PID {pid} has no cgroup v2 entry in /proc/{pid}/cgroup", "drop --cgroup")


#: Lookups from a container name to a host PID, tried in order. Step 7 (`labctl run`) registers one.
RESOLVERS: list[Callable[[str], int | None]] = []


def register_resolver(lookup: Callable[[str], int | None]) -> None:
    """Add a name -> PID lookup (returns None when it does not know the name)."""
    if lookup not in RESOLVERS:
        RESOLVERS.append(lookup)


def _container_module_resolver(name: str) -> int | None:
    """Step 7's containers (`labctl run --name NAME`), when that package is there:
    labctl.containers.store.find(name).pid. None when it is absent or does not know the name."""
    import importlib
    try:
        store = importlib.import_module("labctl.containers.store")
    except ImportError:
        return None
    try:
        return store.find(name).pid
    except LabError:
        return None


def resolve_container(spec: str | int) -> int:
    """A container given as a host PID, or as a name one of RESOLVERS knows; returns a host PID."""
    text = str(spec)
    if text.isdigit():
        return int(text)
    for lookup in RESOLVERS + [_container_module_resolver]:
        pid = lookup(text)
        if pid:
            return int(pid)
    raise LabError(f"no container named {text!r}",
                   "give the host PID of a process in the container (`labctl run` prints it)")


# ---------------------------------------------------------------------------------------------
# Loading programs, with errors a student can act on.


def diagnose() -> list[tuple[str, str, str, str]]:
    """What tracing needs, as (name, status, detail, fix) rows; status is pass, warn or fail."""
    rows = []
    if os.path.isdir(f"{TRACEFS}/events"):
        rows.append(("tracefs", "pass", f"mounted at {TRACEFS}", ""))
    else:
        rows.append(("tracefs", "fail", f"{TRACEFS}/events is missing: tracefs is not mounted",
                     f"mount -t tracefs tracefs {TRACEFS}"))
    rows.append(_diagnose_headers())
    try:
        import bcc  # noqa: F401
        version = getattr(bcc, "__version__", "") or "installed"
        rows.append(("bcc", "pass", f"python3-bpfcc {version} ({Path(bcc.__file__).parent})", ""))
    except ImportError:
        rows.append(("bcc", "fail", "the Python module `bcc` cannot be imported",
                     "apt-get install python3-bpfcc, and make the venv with --system-site-packages"))
    return rows


def _diagnose_headers() -> tuple[str, str, str, str]:
    release = platform.release()
    build = Path(f"/lib/modules/{release}/build")
    fix = (f"apt-get install linux-headers-{release}, or link Debian's headers: "
           f"ln -s /usr/src/linux-headers-*-amd64 {build} (vagrant/provision.sh does it)")
    if Path("/sys/kernel/kheaders.tar.xz").exists():
        return ("kernel headers", "pass", "the kernel provides its own (/sys/kernel/kheaders.tar.xz)", "")
    if not (build / "include").is_dir():
        return ("kernel headers", "fail", f"{build} is missing: bcc cannot compile programs", fix)
    target = os.path.realpath(build)
    version = Path(target).name.removeprefix("linux-headers-")
    if version and not release.startswith(version.split("-")[0] + "-") and version != release:
        return ("kernel headers", "warn",
                f"{build} -> {target}: headers of another kernel; tracepoint programs still work "
                "(their argument layout is read from tracefs)", "")
    return ("kernel headers", "pass", f"{build} -> {target}", "")


def require_tracing() -> None:
    """Fail with one clear line naming what is missing (tracefs, headers, bcc, root)."""
    if os.geteuid() != 0:
        from labctl.errors import NotRootError
        raise NotRootError("loading eBPF programs")
    for name, status, detail, fix in diagnose():
        if status == "fail":
            raise MissingRequirementError(f"eBPF tracing needs {name}: {detail}", fix)


def load_bpf(text: str, debug: bool = False):
    """Compile and load a bcc program. The compiler's output is shown only with debug=True: a student
    who lacks headers should read which package to install, not three screens of clang."""
    require_tracing()
    from bcc import BPF
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        if not debug:
            os.dup2(log.fileno(), 2)   # clang writes to fd 2 directly, below Python's sys.stderr
        try:
            return BPF(text=text)
        except Exception as exc:
            log.seek(0)
            output = log.read().decode(errors="replace")
            first = next((line.strip() for line in output.splitlines() if "error:" in line), str(exc))
            raise LabError(f"the eBPF program did not compile: {first[:200]}",
                           "`labctl doctor` checks tracefs, headers and bcc; --debug shows the compiler output") \
                from None
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def to_dict(event, raw_fields: tuple[str, ...] = ()) -> dict:
    """A ctypes struct from a BPF map or ring buffer, as a plain dict. Char arrays are decoded up to
    their first NUL, except raw_fields, which keep all their bytes."""
    out = {}
    for name, _ctype in event._fields_:
        if name in raw_fields:
            field = getattr(type(event), name)
            out[name] = ctypes.string_at(ctypes.addressof(event) + field.offset, field.size)
            continue
        value = getattr(event, name)
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        elif isinstance(value, ctypes.Array):
            value = list(value)
        out[name] = value
    return out


class Tracer:
    """A loaded bcc program on tracepoints, watching up to MAX_SCOPES containers.

    Subclasses give PROGRAM (C, appended to SCOPE_C), TRACEPOINTS ({"category:event": "lab_function"})
    and event(dict) -> dict to shape one ring-buffer record. Use it as a context manager: leaving the
    block (also by Ctrl-C or SIGTERM) detaches every program and closes every map. Nothing is pinned
    in /sys/fs/bpf, so even a SIGKILLed tracer leaves nothing loaded: the kernel unloads a program when
    the last file descriptor to it closes.
    """
    NAME = ""
    PROGRAM = ""
    TRACEPOINTS: dict[str, str] = {}
    EVENTS_MAP: str | None = "events"
    RAW_FIELDS: tuple[str, ...] = ()

    def __init__(self, scopes: Scope | list[Scope] | None = None, debug: bool = False):
        self.scopes: list[Scope] = []
        self._pending: list[dict] = []
        self._callback_error: BaseException | None = None
        started = time.monotonic()
        self.bpf = load_bpf(SCOPE_C + self.PROGRAM, debug=debug)
        try:
            for tracepoint, function in self.TRACEPOINTS.items():
                try:
                    self.bpf.attach_tracepoint(tp=tracepoint.encode(), fn_name=function.encode())
                except Exception:
                    raise LabError(f"could not attach to tracepoint {tracepoint}",
                                   f"is it in {TRACEFS}/events/{tracepoint.replace(':', '/')}? "
                                   "`labctl doctor` checks tracefs") from None
            if self.EVENTS_MAP:
                self.bpf[self.EVENTS_MAP.encode()].open_ring_buffer(self._on_event)
        except BaseException:
            self.close()
            raise
        self.attach_seconds = time.monotonic() - started
        if scopes is not None:
            self.set_scopes(scopes if isinstance(scopes, list) else [scopes])

    # -- scope ------------------------------------------------------------------------------
    def set_scopes(self, scopes: list[Scope]) -> None:
        """Point the loaded program at these containers (slot i = scopes[i]); no recompilation."""
        if len(scopes) > MAX_SCOPES:
            raise LabError(f"at most {MAX_SCOPES} containers at once", "trace fewer containers")
        table = self.bpf[b"scopes"]
        for i in range(MAX_SCOPES):
            s = scopes[i] if i < len(scopes) else None
            table[ctypes.c_int(i)] = table.Leaf(s.pidns_dev if s else 0, s.pidns_ino if s else 0,
                                                s.cgroup_id if s else 0)
        self.scopes = list(scopes)
        self.on_scopes_changed()

    def on_scopes_changed(self) -> None:
        """Hook for tracers that keep per-container state in maps."""

    def label(self, slot: int) -> str:
        return self.scopes[slot].label if 0 <= slot < len(self.scopes) else f"slot {slot}"

    # -- events -----------------------------------------------------------------------------
    def _on_event(self, ctx, data, size) -> int:
        try:
            raw = self.bpf[self.EVENTS_MAP.encode()].event(data)
            shaped = self.event(to_dict(raw, self.RAW_FIELDS))
            if shaped is not None:
                self._pending.append(shaped)
        except BaseException as exc:   # ctypes would print and swallow it: keep it for poll()
            self._callback_error = exc
        return 0

    def event(self, raw: dict) -> dict | None:
        return raw

    def poll(self, timeout_ms: int = 100) -> list[dict]:
        """Events that arrived, waiting up to timeout_ms for the first."""
        if self.EVENTS_MAP:
            self.bpf.ring_buffer_poll(timeout_ms)
            if self._callback_error is not None:
                error, self._callback_error = self._callback_error, None
                raise error
        else:
            time.sleep(timeout_ms / 1000)
        out, self._pending = self._pending, []
        return out

    def drain(self, settle_ms: int = 50) -> list[dict]:
        """Everything still in the ring buffer."""
        events = []
        while True:
            batch = self.poll(settle_ms)
            if not batch:
                return events
            events += batch

    def stream(self, duration: float | None = None, stop: Callable[[], bool] = lambda: False) -> Iterator[dict]:
        """Events as they come, for `duration` seconds or until stop() says so."""
        deadline = None if duration is None else time.monotonic() + duration
        while (deadline is None or time.monotonic() < deadline) and not stop():
            yield from self.poll(100)

    # -- lifetime ---------------------------------------------------------------------------
    def program_ids(self) -> list[int]:
        """IDs of the BPF programs this tracer loaded (as `bpftool prog show` lists them)."""
        return program_ids_held_by(os.getpid(), self.bpf)

    def close(self) -> None:
        """Detach every program and free every map (bcc's cleanup closes the file descriptors)."""
        bpf = getattr(self, "bpf", None)
        if bpf is not None:
            with contextlib.suppress(Exception):
                bpf.cleanup()
            self.bpf = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def program_ids_held_by(pid: int, bpf=None) -> list[int]:
    """Program IDs behind the BPF file descriptors of a process, from /proc/<pid>/fdinfo (prog_id: N)."""
    ids = []
    fds = [f.fd for f in bpf.funcs.values()] if bpf is not None else None
    for entry in os.listdir(f"/proc/{pid}/fdinfo"):
        if fds is not None and int(entry) not in fds:
            continue
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/fdinfo/{entry}").read_text().splitlines():
                if line.startswith("prog_id:"):
                    ids.append(int(line.split()[1]))
    return sorted(set(ids))


def loaded_program_ids() -> dict[int, str]:
    """Every BPF program the kernel has loaded now: {id: name}, from `bpftool prog show --json`."""
    import json
    import shutil
    import subprocess
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    if not os.path.exists(bpftool):
        raise MissingRequirementError("bpftool is not installed", "apt-get install bpftool")
    out = subprocess.run([bpftool, "prog", "show", "--json"], capture_output=True, text=True, check=True).stdout
    return {p["id"]: p.get("name", "") for p in json.loads(out or "[]")}


def lab_programs_loaded() -> dict[int, str]:
    """The lab's programs (named lab_*) the kernel still has loaded."""
    return {i: n for i, n in loaded_program_ids().items() if n.startswith(PROGRAM_PREFIX)}


def tracer_for(kind: str):
    """The Tracer class for --exec, --open, --syscalls, --net or --oom."""
    if kind == "exec":
        from labctl.tracing.execsnoop import ExecTracer as cls
    elif kind == "open":
        from labctl.tracing.opensnoop import OpenTracer as cls
    elif kind == "syscalls":
        from labctl.tracing.syscount import SyscallCounter as cls
    elif kind == "net":
        from labctl.tracing.tcpstates import TcpStateTracer as cls
    elif kind == "oom":
        from labctl.tracing.oomkill import OomTracer as cls
    else:
        raise LabError(f"unknown tracer {kind!r}", "use --exec, --open, --syscalls, --net or --oom")
    return cls


def format_time(ts_ns: int, start_ns: int) -> str:
    return f"{(ts_ns - start_ns) / 1e9:8.3f}"


if __name__ == "__main__":  # pragma: no cover
    for row in diagnose():
        print(*row, sep=" | ", file=sys.stderr)


def _same_pidns(pid: int, pidns_ino: int) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino == pidns_ino
    except OSError:
        return False


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
    import json
    pid = resolve_container(container)
    scope = Scope.of_pid(pid, by_cgroup=by_cgroup, label=str(container))
    cls = tracer_for(kind)
    with cls(scope, debug=debug) as tracer, stop_on_signals() as interrupted:
        def stopped() -> bool:   # Ctrl-C, SIGTERM, or the container is gone (its PID namespace with it)
            return interrupted() or not _same_pidns(pid, scope.pidns_ino)

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
    if not _same_pidns(pid, scope.pidns_ino):
        print(f"labctl: process {pid} has exited: the container is gone", file=sys.stderr, flush=True)
    print("labctl: detached", file=sys.stderr, flush=True)
    return 0


def trace_build(json_output: bool = False, debug: bool = False, out=print) -> int:
    """`labctl trace --build`: build a container (steps 1–3) under the build tracer and print the timeline."""
    import json
    from labctl.tracing import buildtrace
    calls, start = buildtrace.trace_construction(debug=debug)
    if json_output:
        for c in calls:
            out(json.dumps(c.as_dict(start)))
    else:
        for line in buildtrace.format_timeline(calls, start):
            out(line)
    return 0
