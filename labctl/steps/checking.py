"""What every `labctl check` does: run the student's program, find the process it made, clean up,
and, when the check fails, say what the exercise itself showed.

The judging itself is per step (labctl/steps/sNN_*.py) and reads kernel state only. `judge` wraps a
step's check(): while it runs, every exercise started with `running` is remembered, and the kernel
log (/dev/kmsg) is read from the moment the check began. A failed check then carries, beside its
cause and fix, the details a student needs to see why: the exercise's exit status and last output
lines, a compiler's first error line, and what the kernel logged (e.g. `overlayfs: missing 'workdir'`).
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
import time
from typing import Callable, Iterator, Sequence

from labctl import state
from labctl.errors import CheckFailed


class Run:
    """A running exercise: the Popen, and its output so far (stdout and stderr, merged). Once it has
    been stopped, `ended` is its own exit status (None: the check had to kill it) and `final_output`
    all it printed."""

    def __init__(self, popen: subprocess.Popen, log):
        self.popen = popen
        self._log = log
        self.ended: int | None = None
        self.final_output: str | None = None

    def output(self, limit: int = 2000) -> str:
        if self.final_output is not None:
            return self.final_output[-limit:].strip()
        self._log.flush()
        with open(self._log.name, errors="replace") as f:
            text = f.read()
        return text[-limit:].strip()

    def descendants(self) -> list[int]:
        import psutil
        try:
            return [c.pid for c in psutil.Process(self.popen.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []


@contextlib.contextmanager
def running(argv: Sequence[str], env: dict | None = None) -> Iterator[Run]:
    """Start the program in its own session; on exit SIGKILL it and every process it started."""
    with tempfile.NamedTemporaryFile("w+", prefix="labctl-check-", suffix=".log") as log:
        popen = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True, env=env)
        rec = state.record_process(popen.pid, "exercise under check")
        run = Run(popen, log)
        if _judging is not None:
            _judging.runs.append(run)
        try:
            yield run
        finally:
            run.ended = popen.poll()
            kill_tree(run)
            run.final_output = run.output(1 << 20)
            rec.forget()
            state.forget_dead_processes()


def exit_status(run: Run, timeout: float) -> int | None:
    """Wait up to `timeout` seconds for the exercise to end: its exit status, or None if it is still
    running (`running` kills it on the way out)."""
    try:
        return run.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def run_to_end(argv: Sequence[str], timeout: float) -> tuple[int | None, str]:
    """Run the exercise until it ends, killing it after `timeout` seconds: (its exit status, None if it
    had to be killed; its output)."""
    with running(argv) as run:
        return exit_status(run, timeout), run.output()


def kill_tree(run: Run) -> None:
    """SIGKILL the exercise and every process it started: its descendants, and processes still in
    its session (start_new_session) that were orphaned when a parent exited early."""
    import psutil
    victims = []
    with contextlib.suppress(psutil.NoSuchProcess):
        victims = psutil.Process(run.popen.pid).children(recursive=True)
    for proc in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if proc.pid != run.popen.pid and os.getsid(proc.pid) == run.popen.pid and proc not in victims:
                victims.append(proc)
    for proc in [run.popen] + victims:
        with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
    run.popen.wait()
    psutil.wait_procs(victims, timeout=5)


def process_with_argv(run: Run, argv: Sequence[str], timeout: float = 10.0) -> int:
    """Wait until a descendant of the exercise runs exactly `argv`; returns its host PID. The exercise's
    own process running it means it exec'd without forking: no parent is left to wait and clean up."""
    import psutil
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if psutil.Process(run.popen.pid).cmdline() == list(argv):
                raise CheckFailed(
                    f"your exercise exec'd the command itself: its own process (PID {run.popen.pid}) runs "
                    f"`{' '.join(argv)}`, so nothing is left to wait for it and pass on its status",
                    "fork first: exec the command in the child, and let the parent wait for it")
        for pid in run.descendants():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                if psutil.Process(pid).cmdline() == list(argv):
                    return pid
        if run.popen.poll() is not None and not run.descendants():
            break
        time.sleep(0.02)
    raise CheckFailed(
        f"no process running `{' '.join(argv)}` appeared"
        + (" (the exercise ended first)" if run.popen.returncode is not None else ""),
        "the exercise must fork and exec the command it is given; run it by hand to see what happens")


def expect(condition: bool, cause: str, fix: str, verified: list[str], success: str) -> None:
    """Record `success` if the condition holds, else fail the check with the cause and fix."""
    if not condition:
        raise CheckFailed(cause, fix)
    verified.append(success)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def unique_name(prefix: str) -> str:
    return f"{prefix}-{os.getpid() % 10000:04d}{int(time.time() * 1000) % 10000:04d}"


# ---------------------------------------------------------------------------------------------
# What a failed check shows besides its cause: the exercise's status and output, the kernel's log.

#: A C compiler's diagnostic, as bcc's clang prints it: `/virtual/main.c:12:5: error: ...`.
COMPILER_ERROR = re.compile(r"^\S+:\d+:\d+: (?:fatal )?error: .*$", re.MULTILINE)
OUTPUT_LINES = 6
KERNEL_LINES = 6


class KernelLog:
    """The kernel's log from now on: /dev/kmsg, opened and moved to its end, then read without blocking.
    Each record is `PRIORITY,SEQUENCE,MICROSECONDS,FLAGS;TEXT`; the level is PRIORITY & 7 (0 emergency
    ... 4 warning ... 7 debug). Unreadable (no /dev/kmsg, not root): no lines."""

    def __init__(self):
        self.records: list[tuple[int, str]] = []
        try:
            self._fd: int | None = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
            os.lseek(self._fd, 0, os.SEEK_END)
        except OSError:
            self._fd = None

    def lines(self, max_level: int = 4) -> list[str]:
        """The new records at `max_level` or more urgent (default: warnings and errors), oldest first."""
        while self._fd is not None:
            try:
                record = os.read(self._fd, 8192).decode(errors="replace")
            except BlockingIOError:
                break
            except BrokenPipeError:   # records were overwritten before we read them: go on
                continue
            except OSError:
                break
            head, _, text = record.partition(";")
            with contextlib.suppress(ValueError):
                self.records.append((int(head.split(",")[0]) & 7, text.split("\n")[0]))
        return [text for level, text in self.records if level <= max_level]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Judging:
    """One check being judged: the exercises it ran, and the kernel log since it began."""

    def __init__(self):
        self.runs: list[Run] = []
        self.kernel_log = KernelLog()

    def details(self) -> list[str]:
        """What the last exercise run showed: status, last lines, compiler error; then the kernel log."""
        out: list[str] = []
        if self.runs:
            run = self.runs[-1]
            status = run.ended if run.final_output is not None else run.popen.poll()
            out.append(_describe_status(status))
            text = run.output(1 << 20)
            compiled = COMPILER_ERROR.search(text)
            if compiled:
                out.append(f"the compiler's first error: {compiled.group(0).strip()}")
            lines = [line for line in text.splitlines() if line.strip()]
            if lines:
                out.append("its last output lines:")
                out.extend(f"  | {line[:200]}" for line in lines[-OUTPUT_LINES:])
            else:
                out.append("it printed nothing")
        kernel = self.kernel_log.lines()
        if kernel:
            out.append("the kernel log since the check began (/dev/kmsg):")
            out.extend(f"  | {line[:200]}" for line in kernel[-KERNEL_LINES:])
        return out


def _describe_status(status: int | None) -> str:
    if status is None:
        return "the exercise was still running when the check stopped it"
    if status < 0:
        name = signal.Signals(-status).name if -status in signal.valid_signals() else str(-status)
        return f"the exercise was killed by signal {-status} ({name})"
    return f"the exercise exited with status {status}"


_judging: Judging | None = None


def judge(check: Callable[[list[str]], list[str]], command: list[str]) -> list[str]:
    """Run a step's check(command). If it fails, the CheckFailed carries the details (Judging.details)."""
    global _judging
    _judging = Judging()
    try:
        return check(command)
    except CheckFailed as exc:
        exc.details = _judging.details()
        raise
    finally:
        _judging.kernel_log.close()
        _judging = None


def kernel_log() -> list[str]:
    """The kernel's warnings and errors since the check began (empty outside `judge`)."""
    return _judging.kernel_log.lines() if _judging is not None else []
