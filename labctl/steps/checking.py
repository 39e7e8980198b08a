"""What every `labctl check` does: run the student's program, find the process it made, clean up.

The judging itself is per step (labctl/steps/sNN_*.py) and reads kernel state only.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from typing import Callable, Iterator, Sequence

from labctl import state
from labctl.errors import CheckFailed


class Run:
    """A running exercise: the Popen, and its output so far (stdout and stderr, merged)."""

    def __init__(self, popen: subprocess.Popen, log):
        self.popen = popen
        self._log = log

    def output(self, limit: int = 2000) -> str:
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
        try:
            yield run
        finally:
            kill_tree(run)
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
    """Wait until a descendant of the exercise runs exactly `argv`; returns its host PID."""
    import psutil
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in run.descendants():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                if psutil.Process(pid).cmdline() == list(argv):
                    return pid
        if run.popen.poll() is not None and not run.descendants():
            break
        time.sleep(0.02)
    out = run.output()
    raise CheckFailed(
        f"no process running `{' '.join(argv)}` appeared"
        + (f" (the exercise exited with status {run.popen.returncode})" if run.popen.returncode is not None else "")
        + (f"; its output ended with: {out.splitlines()[-1]}" if out else ""),
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
