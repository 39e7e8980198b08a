"""The parent/child handshake: the messages that cross the fork between the process that starts a
container and the processes that set it up, learned once, from one place (as runc's SYNC_* constants
and youki's `enum Message`). namespaces.spawn (step 1) and labctl.runtime (`labctl run`) both speak it.

The protocol, over two pipes (os.pipe: both ends O_CLOEXEC):

  1. the parent makes `status` (child -> parent) and `go` (parent -> child), then forks
  2. the child unshares and forks PID 1 (for a new PID namespace: see namespaces.py), then sends
         PID {pid, supervisor}   PID 1's host PID (and the process that waits for it)
     PID 1 sends nothing before PID has been sent (ChildEnd.fork holds it back), so PID always comes first
  3. PID 1 sets itself up inside (hostname, mounts, pivot_root, the user) and sends
         READY
  4. the parent acts from outside (cgroups, network links, the container's record), then sends
         GO
  5. PID 1 execs the command. `status` closes with the exec (O_CLOEXEC), so the parent reads EOF:
     EOF after GO means the command runs.
  At any step the child may instead send
         ERROR {cause, fix, errno, traceback}
  and exit. The parent raises it again as a LabError with the child's cause and fix (an OSError's
  errno tells a command that cannot be executed from one that is not there; an unexpected exception's
  traceback is chained as a ChildError for --debug). EOF on `go` before GO means the parent has gone:
  PID 1 exits 125 without exec.

On the wire a message is a JSON object after its length (4 bytes). A write of fewer than PIPE_BUF
(4096) bytes into a pipe is atomic, so the messages of two writers never interleave, and a reader takes
exactly one message, never a part of the next. (json is on the `labctl run` path anyway: the records.)
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from labctl.errors import ChildError, LabError

#: The message kinds, in the order the protocol sends them (the docstring above).
PID = "pid"
READY = "ready"
GO = "go"
CREATED = "created"   # OCI runtime only (runtime/ociinit.py): PID 1 is made and waits on exec.fifo
ERROR = "error"

_LENGTH = 4   # bytes of the length before each message


@dataclass
class Message:
    """One message; only the fields its kind uses are set (and sent)."""
    kind: str
    pid: int = 0           # PID: the host PID of the process that will exec
    supervisor: int = 0    # PID: the process that waits for it (0: the parent's own child does)
    cause: str = ""        # ERROR: what went wrong, one line
    fix: str = ""          # ERROR: what to do about it ("" : the parent says)
    errno: int = 0         # ERROR: for an OSError, its errno
    traceback: str = ""    # ERROR: for an unexpected exception, where it was raised


def describe(exc: BaseException) -> str:
    """The one-line cause for an exception raised in the child."""
    if isinstance(exc, LabError):
        return exc.cause
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc.strerror or exc)
    return f"{type(exc).__name__}: {exc}"


def failure(message: Message | None, what: str, fix: str) -> LabError:
    """The LabError to raise for an ERROR message (or for EOF, None, where a message was due):
    `what: cause`, the child's fix or else `fix`, the child's traceback chained."""
    cause = message.cause if message and message.cause else "no reason given"
    error = LabError(f"{what}: {cause}", (message.fix if message else "") or fix)
    if message and message.traceback:
        error.__cause__ = ChildError(message.traceback)
    return error


def _write(fd: int, message: Message) -> None:
    body = json.dumps({k: v for k, v in asdict(message).items() if v}).encode()
    os.write(fd, len(body).to_bytes(_LENGTH, "little") + body)


def _read_exactly(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _read(fd: int) -> Message | None:
    """The next message, or None at EOF (every writer has closed the pipe or exec'd)."""
    header = _read_exactly(fd, _LENGTH)
    if len(header) < _LENGTH:
        return None
    body = _read_exactly(fd, int.from_bytes(header, "little"))
    return Message(**json.loads(body))


class Pipes:
    """The two pipes, made before the fork; each side then takes its ends and closes the others."""

    def __init__(self, with_go: bool = True):
        self._status_r, self._status_w = os.pipe()
        self._go_r, self._go_w = os.pipe() if with_go else (-1, -1)

    def parent(self) -> "ParentEnd":
        _close(self._status_w, self._go_r)
        return ParentEnd(self._status_r, self._go_w)

    def child(self) -> "ChildEnd":
        _close(self._status_r, self._go_w)
        return ChildEnd(self._status_w, self._go_r)


def _close(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


class ParentEnd:
    """The parent's side: reads `status`, writes `go`."""

    def __init__(self, status: int, go: int):
        self.status, self.go_fd = status, go

    def receive(self) -> Message | None:
        """The next message from the child, None at EOF."""
        return _read(self.status)

    def expect(self, kind: str, what: str, fix: str) -> Message:
        """The next message, which must be `kind`; anything else (ERROR, EOF) is raised (see failure)."""
        message = self.receive()
        if message is None or message.kind != kind:
            raise failure(message, what, fix)
        return message

    def send_go(self) -> None:
        """Send GO, and close `go`: the child needs nothing more from us."""
        _write(self.go_fd, Message(GO))
        _close(self.go_fd)
        self.go_fd = -1

    def close(self) -> None:
        """Close both ends (again is harmless). Before GO, the child reads EOF and exits without exec."""
        _close(self.status, self.go_fd)
        self.status = self.go_fd = -1


class ChildEnd:
    """The child's side: writes `status`, reads `go`. Inherited across forks by every process that
    sends: the helper (or supervisor) sends PID, PID 1 the rest."""

    def __init__(self, status: int, go: int):
        self.status, self.go_fd = status, go
        self._held = -1      # in PID 1: a pipe that reaches EOF once PID has been sent
        self._holding = -1   # in PID 1's parent: its other end, closed once PID is out

    def fork(self, fork=os.fork) -> int:
        """fork() (or a fork-like function: the runtime's, into a cgroup) for PID 1, which is held back:
        its first message waits until its parent has sent PID (send_pid)."""
        held, holding = os.pipe()
        try:
            pid = fork()
        except BaseException:
            _close(held, holding)
            raise
        if pid == 0:
            os.close(holding)
            self._held = held
        else:
            os.close(held)
            self._holding = holding
        return pid

    def send_pid(self, pid: int, supervisor: int = 0) -> None:
        """Send PID, then let PID 1 speak (EOF on its hold-back pipe)."""
        _write(self.status, Message(PID, pid=pid, supervisor=supervisor))
        _close(self._holding)
        self._holding = -1

    def _wait_until_pid_sent(self) -> None:
        if self._held >= 0:
            os.read(self._held, 1)   # returns at EOF: the PID message has been written
            _close(self._held)
            self._held = -1

    def send_ready(self) -> None:
        """Send READY (after PID, see fork)."""
        self._wait_until_pid_sent()
        _write(self.status, Message(READY))

    def send_created(self) -> None:
        """Send CREATED (the OCI runtime's PID 1, after GO: it now waits for `start` on its FIFO)."""
        _write(self.status, Message(CREATED))

    def send_error(self, exc: BaseException, cause: str = "") -> None:
        """Send ERROR for `exc` (the cause given, or describe(exc)); never raises: the child exits next."""
        message = Message(ERROR, cause=cause or describe(exc), fix=getattr(exc, "fix", ""),
                          errno=getattr(exc, "errno", 0) or 0)
        if not isinstance(exc, (LabError, OSError)):
            try:   # (after pivot_root the host's standard library may be out of reach: then no traceback)
                import traceback   # (its end, where the error was raised: the message stays under PIPE_BUF)
                message.traceback = "".join(traceback.format_exception(exc))[-3000:]
            except ImportError:
                pass
        try:
            self._wait_until_pid_sent()
            _write(self.status, message)
        except OSError:
            pass

    def wait_for_go(self) -> bool:
        """Block until the parent sends GO: True, or False if it went away first (EOF)."""
        message = _read(self.go_fd)
        return message is not None and message.kind == GO

    def close(self) -> None:
        _close(self.status, self.go_fd, self._held, self._holding)
        self.status = self.go_fd = self._held = self._holding = -1
