"""`labctl daemon [start|stop|status]`: the daemon in the foreground, or in the background with a PID
file, where there is no systemd to run it (the classroom VM runs it as labctl-daemon.service).

    labctl daemon                 serve in the foreground until Ctrl-C or SIGTERM
    labctl daemon start           the same program, detached (its own session, output to
                                  <state>/daemon.log); returns once the socket answers GET /_ping
    labctl daemon status          the PID file (PID and start time: a recycled PID is never ours), and a ping
    labctl daemon stop            SIGTERM to that PID, SIGKILL after 10 s; the containers run on

The daemon journals itself (its process, its socket, its PID file) before it listens, and forgets
those records as it exits: after a SIGKILL, `labctl cleanup` removes the socket and the PID file, and
`labctl daemon start` replaces a socket nobody answers on. This module imports no aiohttp: `labctl
daemon status|stop` and the CLI's client path stay quick.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

from labctl import state
from labctl.errors import LabError

DEFAULT_SOCKET = "/run/labctl/labctl.sock"


def pid_file(socket_path: str) -> str:
    """The PID file beside the socket: /run/labctl/labctl.pid for /run/labctl/labctl.sock."""
    return os.path.splitext(socket_path)[0] + ".pid"


def log_file() -> str:
    return str(state.state_dir() / "daemon.log")


def running(socket_path: str = DEFAULT_SOCKET) -> dict | None:
    """{"pid": ..., "start_time": ..., "socket": ...} of the daemon serving socket_path, if it runs."""
    try:
        with open(pid_file(socket_path)) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    return info if _alive(info.get("pid", 0), info.get("start_time")) else None


def _alive(pid: int, start_time: int | None) -> bool:
    """That process runs: same PID and start time, and not a zombie (a killed daemon's parent is whatever
    adopts orphans, which may be slow to reap it)."""
    return state.process_start_time(pid) == start_time and state.process_state(pid) not in ("Z", "X")


def ping(socket_path: str, timeout: float = 2.0) -> bool:
    """GET /_ping over the socket answers OK."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        try:
            s.connect(socket_path)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: labctl\r\n\r\n")
            return s.recv(4096).split(b" ", 2)[1:2] == [b"200"]
        except OSError:
            return False


# ---------------------------------------------------------------------------------------------
# The daemon process's own records


def announce(socket_path: str) -> list:
    """In the daemon, before it listens: journal it, its socket and PID file; write the PID file."""
    me = os.getpid()
    _forget_predecessor(socket_path)   # a killed daemon's records: this one takes over its socket
    records = [state.record_process(me, "labctl daemon"), state.record_path(socket_path, "the daemon's socket"),
               state.record_path(pid_file(socket_path), "the daemon's PID file")]
    state.atomic_write_json(pid_file(socket_path), {"pid": me, "start_time": state.process_start_time(me),
                                                    "socket": socket_path, "state": str(state.state_dir())},
                            durable=False)
    return records


def withdraw(socket_path: str, records: list) -> None:
    """In the daemon, as it exits: the PID file goes, and the records."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pid_file(socket_path))
    for rec in records:
        rec.forget()


def daemon_records(socket_path: str | None = None) -> set[str]:
    """The journal records of a daemon that still runs: `labctl cleanup` leaves them (--all does not)."""
    keep = set()
    for rec in state.records():
        if rec.data.get("what") == "labctl daemon" and _alive(rec.data["pid"], rec.data.get("start_time")):
            keep.add(str(rec.path))
            keep |= {str(r.path) for r in state.records() if r.kind == "path" and
                     r.path.name.split("-")[1] == rec.path.name.split("-")[1]}   # the same PID wrote them
    return keep


# ---------------------------------------------------------------------------------------------
# start, stop, status


def start(socket_path: str = DEFAULT_SOCKET, tcp: str | None = None, timeout: float = 15.0,
          env: dict | None = None, preexec=None, log_path: str | None = None) -> dict:
    """`labctl daemon` detached. A cluster host's (labctl/cluster/hosts.py) comes with its environment
    (its own LABCTL_STATE_DIR), a preexec that joins its network namespace, and its own log."""
    if running(socket_path):
        raise LabError(f"the daemon already runs (PID {running(socket_path)['pid']}) on {socket_path}",
                       "`labctl daemon stop` first, or `labctl daemon status`")
    argv = [sys.executable, "-m", "labctl", "daemon", "--socket", socket_path] + (["--tcp", tcp] if tcp else [])
    log_path = log_path or log_file()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                   preexec_fn=preexec, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LabError(f"the daemon exited at once (status {process.returncode})",
                           f"read its log: {log_path}")
        info = running(socket_path)
        if info and ping(socket_path):
            return info
        time.sleep(0.02)
    stop(socket_path)
    raise LabError(f"the daemon did not answer on {socket_path} within {timeout:.0f} s", f"read {log_path}")


def stop(socket_path: str = DEFAULT_SOCKET, timeout: float = 10.0) -> dict | None:
    """SIGTERM, then SIGKILL; then what a killed daemon could not remove. Returns what was stopped."""
    info = running(socket_path)
    if info is None:
        _remove_leftovers(socket_path)
        return None
    pid, start_time = info["pid"], info["start_time"]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while state.process_start_time(pid) == start_time and state.process_state(pid) not in ("Z", "X"):
        if time.monotonic() > deadline:
            state.kill_process(pid, start_time)
            break
        time.sleep(0.02)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    _remove_leftovers(socket_path)
    return info


def _remove_leftovers(socket_path: str) -> None:
    """The socket and PID file of a daemon that is not running, and its journal records."""
    if ping(socket_path, timeout=0.5):
        return   # someone else's daemon answers there: not ours to remove
    for path in (socket_path, pid_file(socket_path)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    _forget_predecessor(socket_path)


def _forget_predecessor(socket_path: str) -> None:
    state.forget_dead_processes()
    for rec in state.records():
        if rec.kind == "path" and rec.data.get("path") in (socket_path, pid_file(socket_path)):
            rec.forget()
