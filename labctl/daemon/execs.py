"""`docker exec`: one more process in a running container, through enter.exec_in (what `labctl exec`
calls), in three requests:

    POST /containers/{id}/exec  {"Cmd": [...], "AttachStdout": true, "Tty": false, ...}  -> {"Id": EXEC}
    POST /exec/EXEC/start       {"Detach": false, "Tty": false}   hijacked: stdin in; stdout (stream 1)
                                and stderr (stream 2) out, each from a pipe of its own, framed
    GET  /exec/EXEC/json        {"Running": false, "ExitCode": N, ...}   what the CLI exits with

The exec'd process is the daemon's child (enter.py forks it into the container's namespaces and
cgroup); the daemon reaps it in a thread and records its exit code.
"""
from __future__ import annotations

import asyncio
import contextlib
import os

from aiohttp import web

from labctl.daemon import streams
from labctl.daemon.api import ApiError, blocking, find_container, json_body, number
from labctl.errors import LabError

EXEC_FIELDS = {"AttachStdin", "Detach", "Container", "AttachStdout", "AttachStderr", "DetachKeys", "Tty", "Env", "Cmd", "Privileged",
               "User", "WorkingDir", "ConsoleSize"}


async def create(request: web.Request) -> web.Response:
    container = await find_container(request.match_info["id"])
    body = await json_body(request)
    unknown = sorted(set(body) - EXEC_FIELDS)
    if unknown:
        raise ApiError(400, f"unknown field(s) in the exec config: {', '.join(unknown)}")
    if container.status != "running":
        raise ApiError(409, f"Container {container.id} is not running")
    cmd = body.get("Cmd")
    if not cmd or not isinstance(cmd, list):
        raise ApiError(400, "No exec command specified")
    if body.get("Privileged"):
        raise ApiError(400, "exec --privileged: the lab's exec gets the container's own profile")
    exec_id = os.urandom(32).hex()
    request.app["engine"].execs[exec_id] = {
        "ID": exec_id, "ContainerID": container.id, "Running": False, "ExitCode": None, "Pid": 0,
        "OpenStdin": bool(body.get("AttachStdin")), "OpenStdout": bool(body.get("AttachStdout")),
        "OpenStderr": bool(body.get("AttachStderr")), "CanRemove": False, "DetachKeys": "",
        "ProcessConfig": {"tty": bool(body.get("Tty")), "entrypoint": cmd[0], "arguments": cmd[1:],
                          "privileged": False, "user": body.get("User") or ""},
        "_env": body.get("Env") or [], "_workdir": body.get("WorkingDir") or None, "_master": None}
    return web.json_response({"Id": exec_id}, status=201)


def _find(request: web.Request) -> dict:
    record = request.app["engine"].execs.get(request.match_info["id"])
    if record is None:
        raise ApiError(404, f"No such exec instance: {request.match_info['id']}")
    return record


def _spawn(record: dict, container, tty: bool):
    """enter.exec_in with pipes (or a terminal): returns (child PID, our ends: stdin, stdout, stderr)."""
    from labctl.containers import enter
    from labctl.runtime.stdio import Stdio
    process = record["ProcessConfig"]
    argv = [process["entrypoint"], *process["arguments"]]
    ours: list[int | None] = [None, None, None]
    if tty:
        from labctl.containers.terminal import console_socket, receive_master
        console, theirs = console_socket()
        child = enter.exec_in(container, argv, Stdio(console=theirs), user=process["user"] or None,
                              workdir=record["_workdir"], env=record["_env"])
        master = receive_master(console)
        os.set_blocking(master, False)
        record["_master"] = master
        return child, [master, master, None]
    stdin_r, ours[0] = os.pipe() if record["OpenStdin"] else (os.open(os.devnull, os.O_RDONLY), None)
    ours[1], out_w = os.pipe()
    ours[2], err_w = os.pipe()
    try:
        child = enter.exec_in(container, argv, Stdio(stdin_r, out_w, err_w), user=process["user"] or None,
                              workdir=record["_workdir"], env=record["_env"])
    finally:
        for fd in (out_w, err_w):
            os.close(fd)
    for fd in ours[1:]:
        os.set_blocking(fd, False)
    return child, ours


async def _copy_out(conn: streams.Hijacked, fd: int, stream: int, tty: bool) -> None:
    """One output of the process, framed as `stream` (raw with a TTY), until its EOF (or EIO: the pty)."""
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(fd, readable.set)
    try:
        while True:
            await readable.wait()
            readable.clear()
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            except OSError:
                break
            if not data:
                break
            with contextlib.suppress(ConnectionResetError):
                await conn.write(data if tty else streams.frame(stream, data))
    finally:
        loop.remove_reader(fd)


async def start(request: web.Request) -> web.StreamResponse:
    from labctl.containers import supervisor
    record = _find(request)
    body = await json_body(request, required=False)
    if record["Running"] or record["ExitCode"] is not None:
        raise ApiError(409, f"exec {record['ID']} has already run")
    container = await find_container(record["ContainerID"])
    tty = bool(body.get("Tty", record["ProcessConfig"]["tty"]))
    # the 101 first, then the process: a client reads the headers before any output can arrive
    conn = None if body.get("Detach") else await streams.Hijacked.open(request, tty)
    try:
        child, ours = await blocking(_spawn, record, container, tty)
    except LabError as exc:   # Docker's way: the stream carries the error, the exit code says 126/127
        record["ExitCode"] = getattr(exc, "exit_code", 126)
        if conn is None:
            raise
        with contextlib.suppress(ConnectionResetError):
            await conn.write(f"OCI runtime exec failed: {exc}\r\n".encode() if tty else
                             streams.frame(2, f"OCI runtime exec failed: {exc}\n".encode()))
        conn.close()
        return conn.response()
    record.update(Running=True, Pid=child)
    copies, feeding = [], None
    if conn is not None:
        copies = [asyncio.ensure_future(_copy_out(conn, fd, n, tty)) for n, fd in ((1, ours[1]), (2, ours[2])) if fd]
        if ours[0] is not None:
            feeding = asyncio.ensure_future(streams.copy_in(conn, ours[0], None if tty else lambda: _close(ours, 0)))
    try:
        record["ExitCode"] = await blocking(supervisor.wait_for, child)
        await asyncio.gather(*copies, return_exceptions=True)
    finally:
        record["Running"] = False
        if feeding is not None:
            feeding.cancel()
        for i in (0, 1, 2):
            _close(ours, i)
        record["_master"] = None
        if conn is not None:
            conn.close()
    return conn.response() if conn is not None else web.Response(status=200)


def _close(fds: list, i: int) -> None:
    """Close fds[i] once (stdin, stdout and stderr may be one terminal's master)."""
    fd, fds[i] = fds[i], None
    if fd is not None and fd not in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


async def inspect(request: web.Request) -> web.Response:
    record = _find(request)
    return web.json_response({k: v for k, v in record.items() if not k.startswith("_")})


async def resize(request: web.Request) -> web.Response:
    from labctl.daemon.containers import set_window
    record = _find(request)
    if record["_master"] is None:
        raise ApiError(409, "this exec has no terminal to resize")
    set_window(record["_master"], number(request, "h", 0), number(request, "w", 0))
    return web.Response(status=201)


def add_routes(router: web.UrlDispatcher, prefix: str) -> None:
    router.add_post(prefix + "/containers/{id}/exec", create)
    router.add_post(prefix + "/exec/{id}/start", start)
    router.add_get(prefix + "/exec/{id}/json", inspect, allow_head=False)
    router.add_post(prefix + "/exec/{id}/resize", resize)
