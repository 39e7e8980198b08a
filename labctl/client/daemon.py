"""The daemon command (step 11): `labctl daemon [start|stop|status]`, as `dockerd` and its service.
The server is labctl/daemon (aiohttp, imported only when it serves)."""
from __future__ import annotations

from labctl.client.parsing import Commands
from labctl.errors import require_root


def add_commands(commands: Commands) -> None:
    p = commands.add("daemon", cmd_daemon,
                     "serve the Docker Engine API (v1.41) on a Unix socket: docker, docker-py and labctl as clients",
                     ["labctl daemon                       # in the foreground, until Ctrl-C",
                      "labctl daemon start && DOCKER_HOST=unix:///run/labctl/labctl.sock docker run --rm busybox echo hi",
                      "labctl daemon status", "labctl daemon stop   # the containers run on"])
    p.add_argument("action", nargs="?", choices=("start", "stop", "status"),
                   help="start|stop|status the background daemon (default: serve in the foreground)")
    p.add_argument("--socket", default=None, metavar="PATH",
                   help="the Unix socket (default /run/labctl/labctl.sock, mode 0660, group labctl)")
    p.add_argument("--tcp", metavar="127.0.0.1:PORT",
                   help="also listen on TCP, loopback only, without TLS (root for whoever connects)")


def cmd_daemon(args) -> int:
    from labctl import ui
    from labctl.daemon import control
    path = args.socket or control.DEFAULT_SOCKET
    if args.action == "status":
        info = control.running(path)
        if not info:
            ui.say(f"no daemon serves {path} (`labctl daemon start`)")
            return 1
        answers = control.ping(path)
        ui.ok(f"daemon PID {info['pid']} on {path}: {'answers' if answers else 'does NOT answer'} GET /_ping; "
              f"log {control.log_file()}")
        return 0 if answers else 1
    require_root("`labctl daemon`")
    if args.action == "start":
        info = control.start(path, args.tcp)
        ui.ok(f"daemon PID {info['pid']} listening on {path}; try DOCKER_HOST=unix://{path} docker version")
        return 0
    if args.action == "stop":
        info = control.stop(path)
        ui.ok(f"daemon PID {info['pid']} stopped; its containers run on" if info else f"no daemon served {path}")
        return 0
    from labctl.daemon import server
    return server.run(path, args.tcp)
