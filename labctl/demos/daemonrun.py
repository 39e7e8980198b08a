"""Step 11's experiments: a container's life through the daemon's REST API, request by request.

    start_private()     `labctl daemon start` on a socket of its own in the state directory
                        (private_daemon(): the same, stopped at the end of a with block)
    client(...)         the docker CLI's (or labctl's) command line and environment for that socket
    requests_of(...)    the requests the daemon logged for one client PID: the daemon learns that PID
                        from SO_PEERCRED at connect(), so the kernel, not the client, names who asked
    request(...)        one HTTP/1.1 request over the Unix socket, written and read by hand (stdlib only)
    timed_run(...)      create, start, wait, delete through that request(): each phase's seconds
    traced_run(...)     a client's `run` under the tracer of labctl/tracing/daemontrace.py: the timeline
                        from its connect() on the socket to the container's execve(), and its phases

request() is also the reference solution of lab/11-client-server/exercise.py (labctl/steps/s11_daemon.py
runs it): what a student could write with socket(7) and RFC 9112, nothing else.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import time
from dataclasses import dataclass
from typing import Iterator

#: A request as server.py logs it: "pid=P uid=U gid=G METHOD PATH STATUS 12.3ms".
LOGGED = re.compile(r"pid=(\d+) uid=(\d+) gid=(\d+) (\S+) (\S+) (\d{3}) ([\d.]+)ms")


@dataclass(frozen=True)
class Logged:
    pid: int
    uid: int
    method: str
    path: str
    status: int
    ms: float


@dataclass
class Daemon:
    socket: str
    log: str
    offset: int          # the log's size when this daemon started: its lines come after

    def requests(self, pid: int | None = None) -> list[Logged]:
        """The requests logged since it started (those from client `pid` only, if given)."""
        return requests_of(self.log, self.offset, pid)

    def stop(self) -> None:
        from labctl.daemon import control
        control.stop(self.socket)


def start_private() -> Daemon:
    """labctl's daemon on a socket of its own, <state>/sockets/private-PID-N.sock (the same state directory
    as every labctl command); Daemon.stop() ends it. The daemon journals its socket, so `labctl cleanup`
    removes it if this process is killed first."""
    from labctl import state
    from labctl.daemon import control
    folder = state.subdir("sockets")
    n = 0
    while (folder / f"private-{os.getpid()}-{n}.sock").exists():
        n += 1
    path = str(folder / f"private-{os.getpid()}-{n}.sock")
    log = control.log_file()
    offset = os.path.getsize(log) if os.path.exists(log) else 0
    control.start(path)
    return Daemon(path, log, offset)


@contextlib.contextmanager
def private_daemon() -> Iterator[Daemon]:
    daemon = start_private()
    try:
        yield daemon
    finally:
        daemon.stop()


def client(socket_path: str, args: list[str], which: str = "") -> tuple[str, list[str], dict]:
    """How to run a Docker client against the socket: docker's CLI (Debian's docker.io), else (or with
    which="labctl") labctl's own client (`labctl --host`). (its name, argv, environment; DOCKER_CONFIG:
    no ~/.docker is made)"""
    from labctl import state
    env = dict(os.environ, DOCKER_HOST=f"unix://{socket_path}", DOCKER_CONFIG=str(state.subdir("docker-config")))
    if os.path.exists("/usr/bin/docker") and which != "labctl":
        return "docker", ["/usr/bin/docker", *args], env
    return "labctl", [sys.executable, "-m", "labctl", "--host", f"unix://{socket_path}", *args], env


def requests_of(log: str, offset: int = 0, pid: int | None = None) -> list[Logged]:
    with open(log, errors="replace") as f:
        f.seek(offset)
        text = f.read()
    found = [Logged(int(m[1]), int(m[2]), m[4], m[5], int(m[6]), float(m[7])) for m in LOGGED.finditer(text)]
    return [r for r in found if pid is None or r.pid == pid]


# ---------------------------------------------------------------------------------------------
# A client in the standard library: HTTP/1.1 by hand over AF_UNIX


def request(path: str, method: str, url: str, body: dict | None = None) -> tuple[int, object]:
    """One request on a connection of its own: (status, the JSON body or None)."""
    status, payload = exchange(path, method, url, body)
    return status, json.loads(payload) if payload.strip() else None


def exchange(path: str, method: str, url: str, body: dict | None = None) -> tuple[int, bytes]:
    """Connect, send the request line, headers and body, read the answer: (status, the body's bytes)."""
    data = json.dumps(body).encode() if body is not None else b""
    head = (f"{method} {url} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(head.encode() + data)
        with s.makefile("rb") as f:
            status = int(f.readline().split()[1])                   # HTTP/1.1 201 Created
            headers = {}
            while (line := f.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            return status, _body(f, headers)


def _body(f, headers: dict[str, str]) -> bytes:
    """The body as the headers frame it: Content-Length bytes, or chunks (a hex size line, the bytes,
    CRLF; a size 0 ends it), or, with neither, everything until the server closes."""
    if "content-length" in headers:
        return f.read(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        while (size := int(f.readline().split(b";")[0], 16)) > 0:
            out += f.read(size)
            f.readline()                                            # the CRLF after each chunk
        return out
    return f.read()


def events(path: str, since: float, until: float | None = None) -> list[dict]:
    """The daemon's events from `since` (seconds since the epoch) to `until` (default: now), replayed from
    its memory: GET /events answers one JSON object per line."""
    until = time.time() if until is None else until
    status, payload = exchange(path, "GET", f"/v1.41/events?since={int(since)}&until={until:.3f}")
    _expect(status, 200, "GET /events", payload)
    return [json.loads(line) for line in payload.splitlines() if line.strip()]


def timed_run(path: str, image: str, argv: list[str]) -> tuple[dict[str, float], int, str]:
    """create, start, wait, delete: ({phase: seconds}, the container's exit code, its ID)."""
    times, code = {}, None
    started = time.perf_counter()
    status, answer = request(path, "POST", "/v1.41/containers/create", {"Image": image, "Cmd": argv})
    _expect(status, 201, "create", answer)
    cid = answer["Id"]
    times["create"] = time.perf_counter() - started
    for phase, method, url, want in (("start", "POST", f"/v1.41/containers/{cid}/start", 204),
                                     ("wait", "POST", f"/v1.41/containers/{cid}/wait", 200),
                                     ("delete", "DELETE", f"/v1.41/containers/{cid}", 204)):
        started = time.perf_counter()
        status, answer = request(path, method, url)
        _expect(status, want, phase, answer)
        times[phase] = time.perf_counter() - started
        if phase == "wait":
            code = answer["StatusCode"]
    return times, code, cid


def _expect(status: int, want: int, what: str, answer) -> None:
    if status != want:
        from labctl.errors import LabError
        message = answer.get("message") if isinstance(answer, dict) else answer
        raise LabError(f"{what} answered {status}, not {want}: {message}", "read the daemon's log")


def traced_run(socket_path: str, args: list[str], which: str = "", debug: bool = False):
    """`docker ARGS` (which="labctl": `labctl --host ... ARGS`) traced from the client's connect() to the
    container's execve(): (the Traced record, its timeline [Step], its phases [(name, ms)])."""
    from labctl.tracing import daemontimeline, daemontrace
    _, argv, env = client(socket_path, args, which)
    traced = daemontrace.trace_client(socket_path, argv, env, debug=debug)
    steps = daemontimeline.timeline(traced)
    return traced, steps, daemontimeline.phases(steps)
