"""Step 1: namespaces. Start a process in new namespaces, look at them, and join them.

How a process gets new namespaces (what `unshare --fork` and runc's nsexec do):

    labctl ──fork──▶ helper ──unshare(CLONE_NEWUTS|NEWPID|NEWIPC|NEWNS)──▶ helper ──fork──▶ PID 1
                       │                                                                     │
                       └── waits for PID 1, exits with its status       sethostname, mounts, exec

unshare(CLONE_NEWPID) does not move the caller into the new PID namespace: it decides where the
caller's *next child* lives. That child is PID 1 inside. Everything else (UTS, IPC, mount, network)
applies to the caller at once.

The parent and the child talk over two pipes (labctl.kernel.handshake): the child reports PID 1's host
PID and READY (or an ERROR with its cause and fix), then waits for GO before it execs, so the caller
can set things up from outside first (cgroups, network links) and a failure inside shows up as one
clear error rather than a silent exit.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field
from collections.abc import Callable, Iterable, Sequence   # not typing: ~2 ms on every `labctl run`

from labctl import state
from labctl.errors import LabError
from labctl.kernel import handshake
from labctl.kernel.signals import forwarding_to
from labctl.kernel.syscalls import NAMESPACE_FLAGS, namespace_inode, setns, sethostname, unshare

#: The namespaces step 1 teaches; step 7 adds net, cgroup and time.
STEP1_NAMESPACES = ("uts", "pid", "ipc", "mnt")
#: Every kind listed in /proc/<pid>/ns (pid_for_children and time_for_children are views, not kinds).
ALL_KINDS = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")


def namespace_flags(kinds: Iterable[str]) -> int:
    """The CLONE_NEW* flags for these namespace kinds, OR-ed (syscalls.NAMESPACE_FLAGS); a LabError
    for a kind the kernel has no flag for."""
    flags = 0
    for kind in kinds:
        if kind not in NAMESPACE_FLAGS:
            raise LabError(f"unknown namespace kind {kind!r}",
                           f"use some of: {', '.join(sorted(NAMESPACE_FLAGS))}")
        flags |= NAMESPACE_FLAGS[kind]
    return flags


def namespace_inodes(pid: int | str = "self", kinds: Iterable[str] = ALL_KINDS) -> dict[str, int]:
    """{kind: inode} read from /proc/<pid>/ns/<kind>."""
    return {kind: namespace_inode(pid, kind) for kind in kinds}


def pid_inside(pid: int) -> list[int]:
    """The NSpid line of /proc/<pid>/status: the process's PID in each nested PID namespace,
    outermost first. For PID 1 of a container: [host_pid, 1]."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return [int(x) for x in line.split()[1:]]
    return [pid]


@dataclass
class NamespacedProcess:
    """A process started in new namespaces. `pid` is its PID on the host; `waiter_pid` is the
    helper that waits for it (our direct child, equal to `pid` when no PID namespace is made)."""
    pid: int
    waiter_pid: int
    namespaces: tuple[str, ...]
    argv: list[str]
    record: state.Record | None = None
    _handshake: handshake.ParentEnd | None = field(default=None, repr=False)
    returncode: int | None = None

    def start(self) -> None:
        """GO: let the child exec its command (it waits after setup so the caller can act first)."""
        if self._handshake is None:
            return
        end, self._handshake = self._handshake, None
        try:
            end.send_go()
            message = end.receive()   # None: EOF, the exec closed the pipe (O_CLOEXEC)
        finally:
            end.close()
        if message is not None:
            self.wait()
            raise handshake.failure(message, "the container could not start",
                                    "see the message above; `labctl doctor` checks the kernel features")

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process; returns its exit status like subprocess does (-N for signal N)."""
        if self.returncode is not None:
            return self.returncode
        if timeout is not None:
            import time
            deadline = time.monotonic() + timeout
            while True:
                pid, status = os.waitpid(self.waiter_pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"process {self.pid} still running after {timeout}s")
                time.sleep(0.01)
        else:
            _, status = os.waitpid(self.waiter_pid, 0)
        self.returncode = _decode_status(status)
        if self.record:
            self.record.forget()
        return self.returncode

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process (PID 1 of its namespace: SIGKILL ends every process inside) and reap."""
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            if sig == signal.SIGKILL:
                self.wait()

    def destroy(self) -> None:
        """Close the handshake (a child still waiting for GO exits without exec), then SIGKILL and reap."""
        if self._handshake is not None:
            self._handshake.close()
            self._handshake = None
        self.kill()

    def __enter__(self) -> "NamespacedProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()


def _decode_status(status: int) -> int:
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def read_all(fd: int) -> str:
    """Read a pipe to EOF (every writer closed): the text written into it."""
    chunks = []
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            return b"".join(chunks).decode(errors="replace")
        chunks.append(chunk)


def spawn(argv: Sequence[str], namespaces: Iterable[str] = STEP1_NAMESPACES, hostname: str | None = None,
          setup: Callable[[], None] | None = None, start: bool = True, stdin: int | None = None,
          stdout: int | None = None, stderr: int | None = None, what: str = "") -> NamespacedProcess:
    """Start `argv` in new namespaces of the given kinds (unshare(2), then fork(2) for PID 1).

    `hostname` is set in the new UTS namespace; `setup` runs inside, as the new PID 1, just before
    exec (step 2 passes the root filesystem set-up here). With start=False the child waits after
    setup until .start() is called. The process is recorded in the journal until it is reaped.
    """
    kinds = tuple(namespaces)
    flags = namespace_flags(kinds)
    if hostname is not None and "uts" not in kinds:
        raise LabError("a hostname needs its own UTS namespace", "add 'uts' to the namespaces")
    pipes = handshake.Pipes()
    waiter = os.fork()
    if waiter == 0:  # the helper
        try:
            _child_main(list(argv), kinds, flags, hostname, setup, pipes.child(), stdin, stdout, stderr)
        finally:
            os._exit(127)
    end = pipes.parent()
    try:
        pid = end.expect(handshake.PID, "could not create the namespaces",
                         "run as root; `labctl doctor` lists which namespace kinds this kernel has").pid
    except BaseException:
        end.close()
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            os.kill(waiter, signal.SIGKILL)
            os.waitpid(waiter, 0)
        raise
    proc = NamespacedProcess(pid, waiter, kinds, list(argv), _handshake=end)
    proc.record = state.record_process(pid, what or " ".join(argv))
    try:
        end.expect(handshake.READY, "setting up the container failed",
                   "see the message above; `labctl doctor` checks the kernel features")
    except LabError:   # the child said why (or died): it exits by itself, reap it
        end.close()
        proc._handshake = None
        proc.wait()
        raise
    except BaseException:
        proc.destroy()
        raise
    if start:
        proc.start()
    return proc


def _child_main(argv, kinds, flags, hostname, setup, end: handshake.ChildEnd, stdin, stdout, stderr) -> None:
    """Runs in the helper process: unshare, fork PID 1 if needed, and relay its exit status."""
    try:
        unshare(flags)
    except OSError as exc:
        end.send_error(exc, f"unshare({'|'.join(kinds)}): {exc.strerror}")
        os._exit(126)
    if "pid" in kinds:
        pid1 = end.fork()  # this child is PID 1 in the new PID namespace
        if pid1:
            end.send_pid(pid1)
            end.close()
            _wait_as_helper(pid1)
    else:
        end.send_pid(os.getpid())
    # From here on we are the process that will exec argv.
    try:
        if hostname is not None:
            sethostname(hostname)
        if setup is not None:
            setup()
        for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            if fd is not None:
                os.dup2(fd, target)
        end.send_ready()
        if not end.wait_for_go():
            os._exit(125)  # the parent went away before saying go
        os.execvp(argv[0], argv)  # on success the status pipe closes (O_CLOEXEC): the parent sees EOF
    except OSError as exc:
        end.send_error(exc, f"{exc.strerror or exc}: {exc.filename or argv[0]}")
    except BaseException as exc:
        end.send_error(exc)
    os._exit(127)


def _wait_as_helper(pid1: int) -> None:
    """The helper, outside the new PID namespace: wait for PID 1, passing on the signals we get, then
    exit as it did (of the same signal, so our parent sees what PID 1 saw)."""
    with forwarding_to(pid1):
        _, status = os.waitpid(pid1, 0)   # (a forwarded signal does not end the wait: PEP 475)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)   # not the handler inherited from labctl
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
    os._exit(os.WEXITSTATUS(status))


def join_namespaces_of(pid: int | str, kinds: Iterable[str]) -> None:
    """setns(2) the caller into the namespaces of `pid` of these kinds, mount and then user last: after
    mount, /proc/<pid> may not be the same /proc any more; after user, the caller holds capabilities in
    that user namespace only, so it could join no namespace the host's owns (a container's PID 1 joined
    its user namespace last too: security/userns.py). (PID and time: for the caller's next child.)"""
    kinds = sorted(kinds, key=lambda kind: {"mnt": 1, "user": 2}.get(kind, 0))
    fds = {kind: os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC) for kind in kinds}
    try:
        for kind in kinds:
            setns(fds[kind], NAMESPACE_FLAGS[kind])
    finally:
        for fd in fds.values():
            os.close(fd)


def run_in_namespaces_of(pid: int, func: Callable[[], object], kinds: Sequence[str] = STEP1_NAMESPACES) -> str:
    """Run func() in a child that joined the namespaces of `pid` with setns(2); returns str(result).

    Joining a PID namespace, like creating one, takes effect for the next child only, so when
    'pid' is among the kinds the function runs in a grandchild.
    """
    read_fd, write_fd = os.pipe()            # the result, as text
    pipes = handshake.Pipes(with_go=False)   # an ERROR, or EOF
    child = os.fork()
    if child == 0:
        end = pipes.child()
        try:
            os.close(read_fd)
            join_namespaces_of(pid, kinds)
            if "mnt" in kinds:
                os.chdir("/")
            if "pid" in kinds:
                inner = os.fork()
                if inner:
                    _, status = os.waitpid(inner, 0)
                    os._exit(os.WEXITSTATUS(status))
            os.write(write_fd, str(func()).encode())
            os._exit(0)
        except BaseException as exc:
            end.send_error(exc)
            os._exit(1)
    os.close(write_fd)
    end = pipes.parent()
    out = read_all(read_fd)
    os.close(read_fd)
    message = end.receive()
    end.close()
    os.waitpid(child, 0)
    if message is not None:
        raise handshake.failure(message, f"could not join the namespaces of PID {pid}",
                                "is the process still running, and are you root?")
    return out


def hostname_of(pid: int) -> str:
    """The hostname the process sees: gethostname() run inside its UTS namespace."""
    import socket
    return run_in_namespaces_of(pid, socket.gethostname, kinds=("uts",))


def describe_namespaces(pid: int, kinds: Iterable[str] = ALL_KINDS) -> list[tuple[str, int, int, bool]]:
    """[(kind, host inode, process inode, shared?)]: which namespaces the process shares with us."""
    mine = namespace_inodes("self", kinds)
    theirs = namespace_inodes(pid, kinds)
    return [(k, mine[k], theirs[k], mine[k] == theirs[k]) for k in kinds]


if __name__ == "__main__":  # pragma: no cover - a quick manual try: python -m labctl.kernel.namespaces
    with spawn(["sleep", "2"], hostname="demo") as p:
        print(p.pid, pid_inside(p.pid), hostname_of(p.pid), describe_namespaces(p.pid), file=sys.stderr)
