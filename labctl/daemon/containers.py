"""/containers/...: the container endpoints, each over the function `labctl` itself calls.

    POST   /containers/create?name=N        build_spec + lifecycle.create      201 {"Id": ..., "Warnings": []}
    POST   /containers/{id}/start           lifecycle.start (engine.py)         204
    POST   /containers/{id}/attach          streams.py (hijacked)               101
    POST   /containers/{id}/wait            the exit code, once it has ended    200 {"StatusCode": N}
    GET    /containers/{id}/logs            the log file, framed (follow, tail)
    POST   /containers/{id}/stop|kill|restart, DELETE /containers/{id} (force, v)
    GET    /containers/json (all), /containers/{id}/json, /containers/{id}/top, /containers/{id}/stats
    POST   /containers/{id}/resize?h=&w=    TIOCSWINSZ on the pty master
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal

from aiohttp import web

from labctl.daemon import streams, translate
from labctl.daemon.api import ApiError, blocking, find_container, flag, json_body, number
from labctl.containers.logs import Stamper, last_lines, no_times
from labctl.daemon.engine import attributes, check_restartable


def _engine(request: web.Request):
    return request.app["engine"]


def image_id(reference: str) -> str:
    """An image's ID, as Docker gives it: its config's digest."""
    from labctl.images.store import ImageStore
    with contextlib.suppress(Exception):
        return ImageStore().manifest(reference)["config"]["digest"]
    return ""


async def create(request: web.Request) -> web.Response:
    name = request.query.get("name", "")
    if name.startswith("/"):
        name = name[1:]
    body = await json_body(request)
    arguments = translate.run_arguments(body, name)
    auto_remove = bool((body.get("HostConfig") or {}).get("AutoRemove"))
    engine = _engine(request)
    container = await blocking(engine.create_blocking, arguments, auto_remove)
    engine.bus.publish("container", "create", container.id, **attributes(container))
    return web.json_response({"Id": container.id, "Warnings": []}, status=201)


async def start(request: web.Request) -> web.Response:
    container = await find_container(request.match_info["id"])
    if container.status == "running":
        return web.Response(status=304)
    engine = _engine(request)
    try:
        if container.status == "exited" and container.id not in engine.pending:
            await engine.start_again(container)   # docker start of a stopped container
        else:
            await engine.start(container)
    except Exception as exc:
        from labctl.errors import CommandFailed
        if isinstance(exc, CommandFailed):   # the words the docker CLI turns into exit 127 or 126
            why = "executable file not found in $PATH" if exc.exit_code == 127 else "permission denied"
            if container.state.get("auto_remove"):
                with contextlib.suppress(Exception):
                    await engine.remove(container, force=True)
            raise ApiError(400, f"OCI runtime create failed: {exc.cause}: {why}") from None
        raise
    return web.Response(status=204)


async def wait(request: web.Request) -> web.StreamResponse:
    """Headers at once, the body once the condition holds: not-running (default), next-exit, removed."""
    container = await find_container(request.match_info["id"])
    condition = request.query.get("condition", "not-running")
    if condition not in ("not-running", "next-exit", "removed"):
        raise ApiError(400, f"invalid condition {condition!r}: not-running, next-exit or removed")
    engine = _engine(request)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    code = await exit_code(engine, container, condition)
    with contextlib.suppress(ConnectionResetError):   # the client gave up waiting
        await response.write(json.dumps({"StatusCode": code, "Error": None}).encode() + b"\n")
    return response


async def until_started(engine, container):
    """The container, reloaded once it is no longer "created" (a request that came before or during
    its start: attach and wait come before it, as the docker CLI sends them)."""
    while container.status == "created":
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(engine.started_event(container.id).wait(), 0.5)
        container = await find_container(container.id)
    return container


async def exit_code(engine, container, condition: str = "next-exit") -> int:
    """Wait as the condition says; the exit code."""
    container = await until_started(engine, container)
    if container.status == "running" or container.id in engine.exits:
        code = await engine.watch(container)
    else:
        code = container.state.get("exit_code") or 0
    if condition == "removed":
        await engine.removed.setdefault(container.id, asyncio.Event()).wait()
    return code


async def attach(request: web.Request) -> web.StreamResponse:
    container = await find_container(request.match_info["id"])
    engine = _engine(request)
    tty = container.spec.tty
    conn = await streams.Hijacked.open(request, tty)
    stdin = flag(request, "stdin") and container.spec.interactive
    output = flag(request, "stdout") or flag(request, "stderr")
    try:   # open now: the log is there from the create on, and a --rm container's goes with it at its end
        log = open(container.dir / "log", "rb")
    except FileNotFoundError:
        log = container.dir / "log"
    offset = 0 if flag(request, "logs") or not hasattr(log, "read") else os.fstat(log.fileno()).st_size
    feeding = None
    try:
        container = await until_started(engine, container)
        if stdin:
            target = engine.masters.get(container.id) if tty else engine.stdin.get(container.id)
            if target is not None:
                at_eof = None if tty else (lambda: engine.close_stdin(container.id))
                feeding = asyncio.ensure_future(streams.copy_in(conn, target, at_eof))
        if output:
            done = engine.watch(container) if container.status == "running" or container.id in engine.exits else None
            async for chunk in streams.follow_file(log, offset, done, engine.output.get(container.id)):
                await conn.write(chunk if tty else streams.frame(1, chunk))
        elif feeding is not None:
            await engine.watch(container)
    except ConnectionResetError:
        pass
    finally:
        if feeding is not None:
            feeding.cancel()
        if hasattr(log, "close"):
            log.close()
        conn.close()
    return conn.response()


async def logs(request: web.Request) -> web.StreamResponse:
    container = await find_container(request.match_info["id"])
    path = container.dir / "log"
    if not path.exists():
        raise ApiError(400, f"{container.name} has no log: only containers started detached "
                            "(docker run -d, or through the daemon) keep one")
    tail = request.query.get("tail", "all")
    offset = 0
    if tail != "all":
        try:
            offset = await blocking(last_lines, path, max(0, int(tail)))
        except ValueError:
            raise ApiError(400, f"invalid tail {tail!r}: a number of lines, or all") from None
    stamper = Stamper(path, offset) if flag(request, "timestamps") else None
    if stamper is not None and not stamper.has_times():
        raise ApiError(400, str(no_times(container.name)))
    engine = _engine(request)
    # Followed while anything may still write the log: PID 1, or its supervisor copying PID 1's last output
    # (a fast `echo` has exited before the copy is in the log; supervisor.py)
    live = container.status == "running" or container.supervisor_alive()
    done = engine.watch(container) if flag(request, "follow") and live else None
    tty = container.spec.tty
    response = web.StreamResponse(headers={"Content-Type": streams.RAW_STREAM if tty else streams.MULTIPLEXED})
    await response.prepare(request)
    with contextlib.suppress(ConnectionResetError):
        async for chunk in streams.follow_file(path, offset, done, engine.output.get(container.id)):
            chunk = stamper.feed(chunk) if stamper else chunk   # (whole lines only, each after its time)
            if chunk:
                await response.write(chunk if tty else streams.frame(1, chunk))
        if stamper and (rest := stamper.flush()):
            await response.write(rest if tty else streams.frame(1, rest))
    return response


async def list_containers(request: web.Request) -> web.Response:
    from labctl.containers import reconcile
    show_all = flag(request, "all")
    rows = [c for c in await blocking(reconcile.reconcile_all) if show_all or c.status == "running"]
    limit = number(request, "limit", -1)
    if limit and limit > 0:
        rows = rows[:limit]
    return web.json_response([translate.summary(c, await blocking(image_id, c.spec.image)) for c in rows])


async def inspect(request: web.Request) -> web.Response:
    container = await find_container(request.match_info["id"])
    return web.json_response(translate.inspect(container, await blocking(image_id, container.spec.image)))


async def stop(request: web.Request) -> web.Response:
    from labctl.containers import lifecycle
    container = await find_container(request.match_info["id"])
    if container.status != "running":
        return web.Response(status=304)
    await blocking(lifecycle.stop, container, float(number(request, "t", 10)))
    await _ended(request, container)
    return web.Response(status=204)


async def _ended(request, container) -> None:
    """Once stop or kill has ended it: let the monitor publish "die" (and remove an AutoRemove one)."""
    engine = _engine(request)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.shield(engine.watch(container)), 10)


async def kill(request: web.Request) -> web.Response:
    from labctl.containers import lifecycle
    container = await find_container(request.match_info["id"])
    if container.status != "running":
        raise ApiError(409, f"Container {container.id} is not running")
    name = request.query.get("signal", "KILL").upper()
    try:
        sig = int(name) if name.isdigit() else signal.Signals["SIG" + name.removeprefix("SIG")]
    except KeyError:
        raise ApiError(400, f"invalid signal {name!r}") from None
    await blocking(lifecycle.kill, container, sig)
    if sig == signal.SIGKILL:
        await _ended(request, container)
    return web.Response(status=204)


async def restart(request: web.Request) -> web.Response:
    """stop (SIGTERM, SIGKILL after t seconds) if it runs, then start again: a new PID 1, in the same
    root filesystem (what the container wrote is kept), a new cgroup."""
    from labctl.containers import lifecycle
    container = await find_container(request.match_info["id"])
    engine = _engine(request)
    check_restartable(container)   # before it is stopped, not after
    if container.status == "running":
        await blocking(lifecycle.stop, container, float(number(request, "t", 10)))
        await _ended(request, container)
        container = await find_container(container.id)
    await engine.start_again(container)
    return web.Response(status=204)


async def delete(request: web.Request) -> web.Response:
    container = await find_container(request.match_info["id"])
    force = flag(request, "force")
    if container.status == "running" and not force:
        raise ApiError(409, f"You cannot remove a running container {container.id}. "
                            "Stop the container before attempting removal or force remove")
    await _engine(request).remove(container, force=force)
    return web.Response(status=204)


async def top(request: web.Request) -> web.Response:
    container = await find_container(request.match_info["id"])
    if container.status != "running":
        raise ApiError(409, f"Container {container.id} is not running")
    return web.json_response(await blocking(_processes, container.pid))


def _processes(pid1: int) -> dict:
    """Every process in PID 1's PID namespace, as `ps -ef` shows them (docker top)."""
    import psutil
    import time
    namespace = os.readlink(f"/proc/{pid1}/ns/pid")
    rows = []
    for p in psutil.process_iter(["pid", "ppid", "username", "create_time", "cmdline", "name", "cpu_times"]):
        with contextlib.suppress(OSError, psutil.Error):
            if os.readlink(f"/proc/{p.pid}/ns/pid") == namespace:
                info = p.info
                cpu = int(sum(info["cpu_times"][:2])) if info["cpu_times"] else 0
                rows.append([info["username"] or "?", str(info["pid"]), str(info["ppid"]), "0",
                             time.strftime("%H:%M", time.localtime(info["create_time"])), "?",
                             f"{cpu // 3600:02d}:{cpu // 60 % 60:02d}:{cpu % 60:02d}",
                             " ".join(info["cmdline"]) or f"[{info['name']}]"])
    return {"Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"], "Processes": rows}


async def stats(request: web.Request) -> web.Response:
    """One sample (stream=false), in the fields `docker stats --no-stream` computes its columns from."""
    from labctl.containers import stats as cstats
    container = await find_container(request.match_info["id"])
    sample = await blocking(cstats.sample, container) if container.status == "running" else None
    cpu = sample.cpu_ns if sample and sample.cpu_ns else 0
    memory = {"usage": sample.memory_bytes or 0, "limit": sample.memory_limit_bytes or (1 << 63) - 1,
              "stats": {}} if sample else {}
    cpus = os.cpu_count() or 1
    system = int(os.times().elapsed * 1e9 * cpus)
    body = {"id": container.id, "name": "/" + container.name, "read": translate.timestamp(__import__("time").time()),
            "cpu_stats": {"cpu_usage": {"total_usage": cpu}, "system_cpu_usage": system, "online_cpus": cpus},
            "precpu_stats": {"cpu_usage": {"total_usage": 0}, "system_cpu_usage": 0, "online_cpus": cpus},
            "memory_stats": memory, "pids_stats": {"current": sample.pids or 0} if sample else {},
            "networks": {}, "blkio_stats": {}}
    return web.json_response(body)


async def resize(request: web.Request) -> web.Response:
    container = await find_container(request.match_info["id"])
    master = _engine(request).masters.get(container.id)
    if master is None:
        raise ApiError(409, f"{container.name} has no terminal to resize (it runs without -t)")
    set_window(master, number(request, "h", 0), number(request, "w", 0))
    return web.Response(status=200)


def set_window(master: int, rows: int, columns: int) -> None:
    """ioctl(TIOCSWINSZ) on the pty master: the kernel sends SIGWINCH to the terminal's foreground group."""
    import fcntl
    import struct
    import termios
    with contextlib.suppress(OSError):
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def add_routes(router: web.UrlDispatcher, prefix: str) -> None:
    for method, path, handler in (
            ("POST", "/containers/create", create), ("GET", "/containers/json", list_containers),
            ("GET", "/containers/{id}/json", inspect), ("POST", "/containers/{id}/start", start),
            ("POST", "/containers/{id}/attach", attach), ("POST", "/containers/{id}/wait", wait),
            ("GET", "/containers/{id}/logs", logs), ("POST", "/containers/{id}/stop", stop),
            ("POST", "/containers/{id}/kill", kill), ("POST", "/containers/{id}/restart", restart),
            ("DELETE", "/containers/{id}", delete), ("GET", "/containers/{id}/top", top),
            ("GET", "/containers/{id}/stats", stats), ("POST", "/containers/{id}/resize", resize)):
        router.add_route(method, prefix + path, handler)
