"""The lab's state directory: atomic writes, locks, and the journal of every kernel object the lab creates.

The journal is an intent log. Before the lab creates something the host can see (a process that may
outlive labctl, a mount, a cgroup, a link, a network namespace, an nftables table) it writes a record
naming the object and the function that removes it; after removing the object it deletes the record.
`labctl cleanup` replays whatever records are left, newest first, so even a SIGKILL halfway through a
step leaves nothing behind that cleanup cannot find. Every undo function tolerates the object being
gone already.
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterator   # not typing: it costs `labctl run` ~2 ms to import

from labctl.errors import LabError

DEFAULT_STATE_DIR = "/var/lib/labctl"


def state_dir() -> Path:
    """The state directory: $LABCTL_STATE_DIR, or /var/lib/labctl."""
    path = Path(os.environ.get("LABCTL_STATE_DIR", DEFAULT_STATE_DIR))
    path.mkdir(parents=True, exist_ok=True)
    return path


def subdir(*parts: str) -> Path:
    """A directory inside the state directory, created if missing."""
    path = state_dir().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes | str, mode: int = 0o644, durable: bool = True) -> None:
    """Write a file so readers see the old content or the new, never half: temp file, fsync, rename.

    durable=False skips the two fsyncs: the file then survives the death of any process (it is in the
    page cache once rename returns) but not necessarily a power loss or a kernel crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    # O_EXCL with a random name is what tempfile.mkstemp does, without importing tempfile (and random)
    # on every labctl start
    tmp = path.with_name(f".{path.name}.tmp-{os.urandom(6).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike, obj: object, mode: int = 0o644, durable: bool = True) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", mode, durable)


@contextlib.contextmanager
def locked(name: str, shared: bool = False, wait: bool = True, timeout: float | None = None,
           label: str | None = None) -> Iterator[None]:
    """Hold an flock(2) on <state>/locks/<name>.lock for the duration of the block, with this process's
    PID and command written into the file, so that a process kept waiting can say who it waits for.

    wait=False: raise BlockingIOError at once if another process holds it in a conflicting mode.
    label ("the image store"): when the lock is busy, say on stderr what is waited for and who holds it.
    timeout: give up after that many seconds with LockTimeout, one line naming the holder."""
    lock_path = subdir("locks") / f"{name}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        _acquire(fd, lock_path, fcntl.LOCK_SH if shared else fcntl.LOCK_EX, wait, timeout, label or name)
        # Shared holders overwrite each other's line: the file names the latest, lock_holder checks it lives.
        os.pwrite(fd, f"{os.getpid()} {_command()}".encode()[:HOLDER_BYTES].ljust(HOLDER_BYTES), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


HOLDER_BYTES = 128   # the lock file's one line, padded to a fixed size so that a rewrite never leaves a tail


class LockTimeout(LabError):
    """Another process held a lock for longer than the caller would wait (the CLI prints one line)."""

    def __init__(self, label: str, holder: str, timeout: float):
        super().__init__(f"gave up after {timeout:g} s waiting for {label}, held by {holder}",
                         "let that command finish, or stop it, then try again")


def _acquire(fd: int, lock_path: Path, mode: int, wait: bool, timeout: float | None, label: str) -> None:
    """flock(fd, mode | LOCK_NB) first; if busy: raise (wait=False), or say who holds it and wait, with
    a blocking flock(2) (interrupted by Ctrl-C and SIGTERM) or, with a timeout, by retrying every 50 ms."""
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        if not wait:
            raise
    holder = lock_holder(lock_path)
    print(f"labctl: waiting for {label}, held by {holder}", file=sys.stderr, flush=True)
    if timeout is None:
        fcntl.flock(fd, mode)
        return
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(0.05)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockTimeout(label, lock_holder(lock_path), timeout) from None


def lock_holder(lock_path: Path) -> str:
    """Who took the lock last, as "`labctl pull` pid 1234", from the line its holder wrote into the file."""
    try:
        pid_text, _, command = lock_path.read_text().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return "another process"
    # the last taker may have gone while an earlier shared holder stays: then its name would mislead
    return f"`{command}` pid {pid}" if os.path.exists(f"/proc/{pid}") else "another process"


def _command() -> str:
    """This process as a user would name it: `labctl pull`, `pytest`, `python3`."""
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] not in ("", "-c") else Path(sys.executable)
    name = program.parent.name if program.name == "__main__.py" else program.name
    if name == "labctl":
        words = [w for w in sys.argv[1:] if not w.startswith("-")][:1]
        return " ".join([name, *words])
    return name or "python"


# ---------------------------------------------------------------------------------------------
# The journal


@dataclass
class Record:
    """One journal entry: a kernel object the lab created, and how to remove it."""
    path: Path
    kind: str
    undo: str
    data: dict

    def forget(self) -> None:
        """The object is gone: drop its record."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def describe(self) -> str:
        detail = ", ".join(f"{k}={v}" for k, v in sorted(self.data.items()))
        return f"{self.kind} ({detail})"


def journal_dir() -> Path:
    return subdir("journal")


def record(kind: str, undo: str | Callable, **data: object) -> Record:
    """Write a journal record before creating an object. `undo` is "module:function" (or the function
    itself, if it is a module-level function); cleanup calls it with the record's data as keywords."""
    if callable(undo):
        undo = f"{undo.__module__}:{undo.__qualname__}"
    name = f"{time.time_ns():020d}-{os.getpid()}-{kind}.json"
    path = journal_dir() / name
    # Not fsynced (durable=False): the record must outlive a SIGKILL of labctl, and the page cache gives
    # that once rename(2) returns. What it names is almost always a kernel object (a mount, a cgroup, a
    # process, a link, a namespace), which a power loss or a crash removes anyway; only a directory the
    # lab made on disk could outlive the reboot without its record. Two fsyncs per record cost 0.5 ms
    # on a quiet disk and up to ~10 ms on a busy one, four times on each `labctl run`.
    atomic_write_json(path, {"kind": kind, "undo": undo, "data": data}, durable=False)
    return Record(path, kind, undo, data)


def forget_records(kind: str, **match: object) -> None:
    """Drop the records of objects just removed, whichever process wrote them."""
    for rec in records(kind):
        if all(rec.data.get(k) == v for k, v in match.items()):
            rec.forget()


def records(kind: str | None = None) -> list[Record]:
    """All records left in the journal, oldest first; only those of `kind` if given (their file names
    end in -KIND.json: the others are not read)."""
    found = []
    for path in sorted(journal_dir().glob(f"*-{kind}.json" if kind else "*.json")):
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a record being written right now, or a torn one: not a valid record
        if kind is None or entry["kind"] == kind:
            found.append(Record(path, entry["kind"], entry["undo"], entry.get("data", {})))
    return found


def undo_record(rec: Record) -> None:
    """Remove the object a record names, then the record."""
    module_name, _, func_name = rec.undo.partition(":")
    func = getattr(importlib.import_module(module_name), func_name)
    func(**rec.data)
    rec.forget()


def cleanup(report: Callable[[str], None] = lambda line: None, keep: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Undo every record in the journal, newest first, but those whose path is in `keep` (the records of
    running containers, say: labctl/containers/cleanup.py). Returns the errors (empty when all went)."""
    errors = []
    for rec in reversed(records()):
        if str(rec.path) in keep:
            continue
        try:
            undo_record(rec)
            report(f"removed {rec.describe()}")
        except Exception as exc:  # keep going: one stuck object must not keep the rest alive
            errors.append(f"{rec.describe()}: {exc}")
    tmp = state_dir() / "tmp"
    if tmp.is_dir():
        for leftover in tmp.iterdir():
            if _no_mounts_below(leftover):
                shutil.rmtree(leftover, ignore_errors=True)
                report(f"removed temporary {leftover}")
    return errors


def _no_mounts_below(path: Path) -> bool:
    prefix = str(path.resolve())
    with open("/proc/self/mountinfo") as f:
        return not any(mp == prefix or mp.startswith(prefix + "/") for mp in (line.split()[4] for line in f))


# ---------------------------------------------------------------------------------------------
# Undo functions for the objects every step creates: processes, mounts and directories.


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks): with the PID, it names one process,
    so a recycled PID is never mistaken for ours."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def record_process(pid: int, what: str = "") -> Record:
    return record("process", kill_process, pid=pid, start_time=process_start_time(pid), what=what)


def forget_dead_processes() -> None:
    """Drop the records of processes that have ended (a process killed from outside cannot drop its
    own records, nor those of its children). A zombie has ended too: only its reaping is left, to a
    parent that may be slow at it (an orphan's is whatever adopted it)."""
    for rec in records("process"):
        pid = rec.data["pid"]
        if process_start_time(pid) != rec.data.get("start_time") or process_state(pid) in ("Z", "X"):
            rec.forget()


def kill_process(pid: int, start_time: int | None, what: str = "", timeout: float = 5.0) -> None:
    """SIGKILL the process if it is still the one recorded (same PID and start time), and wait for it."""
    if start_time is None or process_start_time(pid) != start_time:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)  # reaps it if it is our child; otherwise the loop below waits
    deadline = time.monotonic() + timeout
    while process_start_time(pid) == start_time and time.monotonic() < deadline:
        state = process_state(pid)
        if state in ("Z", "X"):
            return  # dead, waiting for its parent to reap it
        time.sleep(0.01)


def process_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def record_mount(target: str, what: str = "") -> Record:
    return record("mount", unmount, target=str(target), what=what)


def is_mountpoint(target: str) -> bool:
    target = os.path.realpath(target)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def unmount(target: str, what: str = "") -> None:
    """umount2(target, MNT_DETACH) for as long as something is mounted there."""
    from labctl.kernel.syscalls import MNT_DETACH, umount2
    while is_mountpoint(target):
        umount2(target, MNT_DETACH)


def record_path(path: str, what: str = "") -> Record:
    return record("path", remove_path, path=str(path), what=what)


def remove_path(path: str, what: str = "") -> None:
    """Remove a directory tree (or a file) the lab created, refusing anything that still has mounts."""
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        return
    if p.is_dir() and not p.is_symlink():
        if not _no_mounts_below(p):
            raise RuntimeError(f"{path} still has mounts below it")
        shutil.rmtree(p)
    else:
        p.unlink()


def new_tmpdir(prefix: str) -> Path:
    """A fresh directory under <state>/tmp (cleanup removes leftovers there)."""
    import tempfile
    return Path(tempfile.mkdtemp(prefix=prefix, dir=subdir("tmp")))
