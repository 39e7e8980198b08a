"""The daemon's application: the routes of every module, the middlewares, the socket it listens on.

    client ──connect(/run/labctl/labctl.sock)──▶ aiohttp parses the request (headers capped at 8 KiB)
           ──▶ middleware: who is it? SO_PEERCRED on the socket gives the client's PID, UID and GID, which
               the kernel filled in at connect(): no client can lie about them. Logged with the request.
           ──▶ middleware: errors become Docker's {"message": ...} with Docker's status code
           ──▶ the handler (containers.py, images.py, ...), which calls the same library as `labctl`

The socket is root-equivalent: whoever can write to it can run `docker run -v /:/host busybox` and
edit the host's files as root. So it is made mode 0660, owned by root and the group `labctl`
(provisioning creates it): being in that group is being root, as being in `docker` is. TCP is off
unless asked for (--tcp), and then only on a loopback address, with dockerd's warning.

The paths Docker's clients use carry the API version (/v1.41/containers/json); each route is
registered with and without that prefix.
"""
from __future__ import annotations

import asyncio
import grp
import logging
import os
import signal
import socket
import struct
import time

from aiohttp import web

from labctl.daemon import api, build, containers, execs, images, resources, system
from labctl.daemon.api import ApiError, error_response
from labctl.daemon.engine import Engine
from labctl.errors import LabError

DEFAULT_SOCKET = "/run/labctl/labctl.sock"
SOCKET_GROUP = "labctl"
MAX_HEADER = 8190          # bytes in a request line or one header field (aiohttp's own default, made explicit)
log = logging.getLogger("labctl.daemon")


def peer_credentials(request: web.Request) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the process at the other end of a Unix socket: getsockopt(SO_PEERCRED)."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", raw)


@web.middleware
async def errors(request: web.Request, handler):
    """Every error as dockerd gives it: a status code and {"message": ...}; the daemon itself stays up."""
    started = time.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except ApiError as exc:
        status = exc.status
        return error_response(exc.status, exc.message)
    except LabError as exc:
        status = api.status_of(exc)
        return error_response(status, api.message_of(exc))
    except web.HTTPException as exc:
        status = exc.status
        if exc.status == 404:
            return error_response(404, "page not found")
        if exc.status == 405:
            return error_response(405, f"{request.method} is not allowed on {request.path}")
        return error_response(exc.status, exc.reason)
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception as exc:   # a bug, or the kernel refused: one line, and the traceback in the log
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, f"{exc.__class__.__name__}: {exc}")
    finally:
        peer = peer_credentials(request)
        who = f"pid={peer[0]} uid={peer[1]} gid={peer[2]}" if peer else request.remote
        log.info("%s %s %s %d %.1fms", who, request.method, request.path_qs, status,
                 (time.monotonic() - started) * 1000)


def make_app(engine: Engine | None = None) -> web.Application:
    app = web.Application(middlewares=[errors], client_max_size=api.MAX_BODY,
                          handler_args={"max_line_size": MAX_HEADER, "max_field_size": MAX_HEADER,
                                        "keepalive_timeout": 75.0})
    app["engine"] = engine or Engine()
    for prefix in ("", "/v{version:1\\.[0-9]+}"):
        for module in (system, containers, execs, images, resources, build):
            module.add_routes(app.router, prefix)

    async def on_cleanup(app):
        await app["engine"].close()
    app.on_cleanup.append(on_cleanup)
    return app


# ---------------------------------------------------------------------------------------------
# The socket


def _refuse_if_answered(path: str) -> None:
    """A socket file that answers is another daemon's: refuse. One that does not is a crash's: remove it."""
    if not os.path.exists(path):
        return
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)
            return
    raise LabError(f"a daemon already listens on {path}", "`labctl daemon status`; stop it first, or give --socket")


def secure_socket(path: str) -> None:
    """Mode 0660, group labctl (when provisioning made it): root and the group's members may connect."""
    try:
        gid = grp.getgrnam(SOCKET_GROUP).gr_gid
    except KeyError:
        gid = 0
        log.warning("group %s does not exist: only root may use %s (provisioning creates the group)",
                    SOCKET_GROUP, path)
    os.chown(path, 0, gid)
    os.chmod(path, 0o660)


def check_tcp(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise LabError(f"--tcp {address}: the lab's daemon listens on a loopback address only",
                       "give --tcp 127.0.0.1:PORT (the API gives root to whoever reaches it)")
    if not port.isdigit():
        raise LabError(f"--tcp {address}: no port", "give --tcp 127.0.0.1:PORT")
    return host, int(port)


async def serve(path: str = DEFAULT_SOCKET, tcp: str | None = None, ready=None) -> None:
    """Listen on the socket (and TCP if asked) until SIGTERM or SIGINT; containers are left running."""
    engine = Engine()
    app = make_app(engine)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    _refuse_if_answered(path)
    old_umask = os.umask(0o117)   # the socket is born 0660: no moment when anyone else may connect
    try:
        await web.UnixSite(runner, path).start()
    finally:
        os.umask(old_umask)
    secure_socket(path)
    from labctl.daemon import control
    records = control.announce(path)
    if tcp:
        host, port = check_tcp(tcp)
        log.warning("API listening on %s:%d without TLS: anyone who can connect to it is root on this host",
                    host, port)
        await web.TCPSite(runner, host, port).start()
    restored = await engine.restore()
    from labctl.cluster.membership import from_environment
    from labctl.cluster.endpoint import reregister
    from labctl.containers.networking import overlay_attachments
    # step 13: a cluster host registers itself in the store; each new lease carries its containers' endpoints
    member = from_environment(path, on_lease=lambda lease: reregister(lease, overlay_attachments()))
    if member:
        member.start()
        from labctl.cluster import agent
        overlay_watch = agent.from_environment().start()   # FDB, neighbours, /etc/hosts follow etcd
    log.info("listening on %s; %d running container(s) restored%s", path, len(restored),
             f": {', '.join(restored)}" if restored else "")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready:
        ready()
    try:
        await stop.wait()
    finally:
        if member:
            overlay_watch.stop()
            member.stop()
        await runner.cleanup()
        if os.path.exists(path):
            os.unlink(path)
        control.withdraw(path, records)
        log.info("stopped; the containers run on (their supervisors do not need the daemon)")


def run(path: str = DEFAULT_SOCKET, tcp: str | None = None, ready=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s labctl-daemon %(levelname)s %(message)s")
    asyncio.run(serve(path, tcp, ready))
    return 0
