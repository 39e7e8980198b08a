"""labctl's commands as clients of the daemon (step 11): with `--host unix:///PATH` or LABCTL_HOST, as
DOCKER_HOST for docker, `labctl run|ps|logs|exec|stop|rm|images|pull|push` send the REST requests the docker
CLI sends, over the Unix socket, instead of doing the work themselves.

This is the path the step 11 benchmark measures (`labctl run --rm busybox /bin/true` through the
daemon), so it is lean: the C module _socket and _json only (the `socket` and `json` modules cost
~11 ms to import, _socket and _json nothing measurable), HTTP/1.1 written and read by hand: a request
line, three headers, a body; a status line, headers up to the blank line, a Content-Length body.

    labctl run --rm busybox echo hi
      POST /containers/create                  {"Image": "busybox", "Cmd": [...], "HostConfig": {...}}
      POST /containers/ID/attach?stream=1&stdout=1&stderr=1    (101: the output follows, in frames)
      POST /containers/ID/wait?condition=removed               (sent now, answered at the end)
      POST /containers/ID/start
      ... frames until EOF, then the wait's {"StatusCode": N}: labctl's exit code
"""
from __future__ import annotations

import os
import sys

import _json
import _socket

DEFAULT = "unix:///run/labctl/labctl.sock"
COMMANDS = ("run", "ps", "logs", "exec", "stop", "rm", "images", "pull", "push")


def host(argv: list[str]) -> str | None:
    """--host URL (removed from argv) or $LABCTL_HOST: the daemon's socket path, or None."""
    value = os.environ.get("LABCTL_HOST")
    if "--host" in argv:
        i = argv.index("--host")
        value = argv[i + 1] if i + 1 < len(argv) else DEFAULT
        del argv[i:i + 2]
    if not value:
        return None
    if not value.startswith("unix://"):
        raise SystemExit(f"labctl: error: --host {value}: the lab's daemon listens on unix:///PATH only")
    return value[len("unix://"):]


class Error(Exception):
    pass


class Connection:
    def __init__(self, path: str):
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            self.sock.connect(path)
        except OSError as exc:
            raise Error(f"cannot connect to the daemon at {path}: {exc.strerror} "
                        "(fix: `labctl daemon start`, or drop --host/LABCTL_HOST)") from None
        self.buffer = b""

    def send(self, method: str, url: str, body=None, upgrade: bool = False) -> None:
        data = b"" if body is None else _encode(body).encode()
        head = f"{method} /v1.41{url} HTTP/1.1\r\nHost: labctl\r\nContent-Length: {len(data)}\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        if upgrade:
            head += "Connection: Upgrade\r\nUpgrade: tcp\r\n"
        self.sock.sendall(head.encode() + b"\r\n" + data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self, stream: bool = False) -> tuple[int, dict[str, str], bytes]:
        """Status, headers; the body (Content-Length or chunked) unless `stream` (then read() it)."""
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise Error("the daemon closed the connection")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if stream or status in (101, 204, 304):
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            return status, headers, b"".join(self.chunks())
        length = int(headers.get("content-length", 0))
        while len(self.buffer) < length and self._fill():
            pass
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def chunks(self):
        while True:
            while b"\r\n" not in self.buffer:
                if not self._fill():
                    return
            size_line, self.buffer = self.buffer.split(b"\r\n", 1)
            size = int(size_line, 16)
            while len(self.buffer) < size + 2:
                if not self._fill():
                    return
            chunk, self.buffer = self.buffer[:size], self.buffer[size + 2:]
            if size == 0:
                return
            yield chunk

    def raw(self):
        """A hijacked stream's bytes, to its end."""
        if self.buffer:
            yield self.buffer
            self.buffer = b""
        while chunk := self.sock.recv(65536):
            yield chunk

    def close(self) -> None:
        self.sock.close()


def _encode(obj) -> str:
    """A minimal JSON encoder over _json's string escaping (the json module costs an import)."""
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, (int, float)):
        return repr(obj)
    if isinstance(obj, str):
        return _json.encode_basestring_ascii(obj)
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{_json.encode_basestring_ascii(str(k))}: {_encode(v)}" for k, v in obj.items()) + "}"
    return "[" + ", ".join(_encode(v) for v in obj) + "]"


def field(data: bytes, key: str):
    """One top-level field of a small JSON object ({"Id": "..."}, {"StatusCode": 0}) without the json
    module: _json.scanstring for a string, int() for a number."""
    text = data.decode()
    at = text.index(f'"{key}"') + len(key) + 2
    at = text.index(":", at) + 1
    while text[at] == " ":
        at += 1
    if text[at] == '"':
        return _json.scanstring(text, at + 1)[0]
    end = at
    while end < len(text) and (text[end].isdigit() or text[end] == "-"):
        end += 1
    return int(text[at:end])


def decode(data: bytes):
    import json   # only for the commands that print what the daemon lists (ps, images)
    return json.loads(data)


def call(path: str, method: str, url: str, body=None):
    conn = Connection(path)
    try:
        conn.send(method, url, body)
        status, _, data = conn.response()
    finally:
        conn.close()
    result = decode(data) if data.strip() else None
    if status >= 400:
        raise Error((result or {}).get("message", f"status {status}"))
    return result


# ---------------------------------------------------------------------------------------------
# The commands


def _write_frames(chunks, tty: bool = False) -> None:
    """A multiplexed stream (8-byte headers) to fds 1 and 2; raw with a TTY."""
    pending = b""
    for chunk in chunks:
        if tty:
            os.write(1, chunk)
            continue
        pending += chunk
        while len(pending) >= 8:
            size = int.from_bytes(pending[4:8], "big")
            if len(pending) < 8 + size:
                break
            os.write(2 if pending[0] == 2 else 1, pending[8:8 + size])
            pending = pending[8 + size:]


def _host_config(args) -> dict:
    config = {"AutoRemove": args.rm, "Init": args.init, "NetworkMode": args.network if args.network else "default",
              "Binds": args.volume, "Tmpfs": {t: "" for t in args.tmpfs}, "CapAdd": args.cap_add,
              "CapDrop": args.cap_drop, "Privileged": args.privileged, "SecurityOpt": args.security_opt,
              "ReadonlyRootfs": args.read_only, "PidsLimit": args.pids_limit or 0,
              "NanoCpus": int(args.cpus * 1e9) if args.cpus else 0}
    if args.memory:
        from labctl.kernel.cgroups.limits import parse_bytes
        config["Memory"] = parse_bytes(args.memory)
    if args.publish:
        from labctl.network.ports import PortMapping
        config["PortBindings"] = {}
        for p in map(PortMapping.parse, args.publish):
            config["PortBindings"].setdefault(f"{p.container_port}/{p.protocol}", []).append(
                {"HostIp": p.host_ip, "HostPort": str(p.host_port)})
    return config


def run(path: str, args) -> int:
    if args.tty or args.interactive or args.userns != "host":
        raise Error("labctl run -i/-t/--userns through the daemon: not in the lean client (use docker run -it, "
                    "or drop --host to run it directly)")
    body = {"Image": args.image, "Cmd": args.command or None, "Env": args.env, "WorkingDir": args.workdir or "",
            "User": args.user or "", "Hostname": args.hostname or "", "AttachStdout": not args.detach,
            "AttachStderr": not args.detach, "Entrypoint": args.entrypoint.split() if args.entrypoint else None,
            "HostConfig": _host_config(args)}
    main = Connection(path)
    main.send("POST", "/containers/create" + (f"?name={args.name}" if args.name else ""), body)
    status, _, data = main.response()
    if status != 201:
        raise Error(field(data, "message"))
    cid = field(data, "Id")
    attach = waiter = None
    if not args.detach:
        attach = Connection(path)
        attach.send("POST", f"/containers/{cid}/attach?stream=1&stdout=1&stderr=1", upgrade=True)
        attach.response(stream=True)
        waiter = Connection(path)
        waiter.send("POST", f"/containers/{cid}/wait?condition={'removed' if args.rm else 'next-exit'}")
    main.send("POST", f"/containers/{cid}/start")
    status, _, data = main.response()
    main.close()
    if status >= 400:
        message = field(data, "message")
        print(f"labctl: error: {message}", file=sys.stderr)
        return 127 if "not found" in message else 126 if "permission denied" in message else 125
    if args.detach:
        print(cid)
        return 0
    _write_frames(attach.raw())
    attach.close()
    _, _, data = waiter.response()
    waiter.close()
    return field(data, "StatusCode")


def ps(path: str, args) -> int:
    rows = call(path, "GET", f"/containers/json?all={int(args.all)}")
    if args.quiet:
        print("\n".join(c["Id"][:12] for c in rows))
        return 0
    table = [("CONTAINER ID", "IMAGE", "COMMAND", "STATUS", "NAMES")] + \
        [(c["Id"][:12], c["Image"], c["Command"][:30], c["Status"], c["Names"][0].lstrip("/")) for c in rows]
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    for r in table:
        print("   ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    return 0


def logs(path: str, args) -> int:
    conn = Connection(path)
    conn.send("GET", f"/containers/{args.container}/logs?stdout=1&stderr=1&follow={int(args.follow)}"
                     f"&tail={getattr(args, 'tail', None) or 'all'}&timestamps={int(getattr(args, 'timestamps', False))}")
    status, headers, data = conn.response(stream=True)
    if status >= 400:
        conn.close()
        raise Error(_message(conn, headers))
    _write_frames(conn.chunks(), tty="raw-stream" in headers.get("content-type", ""))
    conn.close()
    return 0


def _message(conn: Connection, headers: dict) -> str:
    length = int(headers.get("content-length", 0))
    while len(conn.buffer) < length and conn._fill():
        pass
    return field(conn.buffer[:length], "message")


def each(path: str, names: list[str], method: str, url: str) -> int:
    failed = False
    for name in names:
        try:
            call(path, method, url.format(name=name))
            print(name)
        except Error as exc:
            print(f"labctl: error: {exc}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


def images(path: str, args) -> int:
    for image in call(path, "GET", "/images/json"):
        for tag in image["RepoTags"]:
            print(tag if args.quiet else f"{tag:50} {image['Id'][7:19]}  {image['Size'] / 1e6:.1f} MB")
    return 0


def pull(path: str, args) -> int:
    import json
    conn = Connection(path)
    conn.send("POST", f"/images/create?fromImage={args.image}")
    status, headers, data = conn.response(stream=True)
    if status >= 400:
        raise Error(_message(conn, headers))
    failed = False
    for chunk in conn.chunks():
        for line in chunk.splitlines():
            message = json.loads(line) if line.strip() else {}
            if "error" in message:
                print(f"labctl: error: {message['error']}", file=sys.stderr)
                failed = True
            elif not args.quiet and message.get("status") and "progressDetail" not in message:
                print(f"{message.get('id', '')}{': ' if message.get('id') else ''}{message['status']}")
    conn.close()
    if args.quiet and not failed:
        print(args.image)
    return 1 if failed else 0


def push(path: str, args) -> int:
    """POST /images/NAME/tag (when a TARGET is given: the daemon pushes an image to the name it has),
    then POST /images/NAME/push?tag=TAG, printing the stream's steps (not its byte counts)."""
    import json
    from urllib.parse import quote
    from labctl.images import reference
    source = reference.parse(args.image)
    target = reference.parse(args.target) if args.target else source
    tag = target.tag if args.target and ":" in args.target.rsplit("/", 1)[-1] else source.tag or "latest"
    if args.target:
        call(path, "POST", f"/images/{quote(str(source))}/tag?repo={quote(target.name)}&tag={quote(tag)}")
    conn = Connection(path)
    conn.send("POST", f"/images/{quote(target.name)}/push?tag={quote(tag)}")
    status, headers, data = conn.response(stream=True)
    if status >= 400:
        raise Error(_message(conn, headers))
    failed, digest = False, None
    for chunk in conn.chunks():
        for line in chunk.splitlines():
            message = json.loads(line) if line.strip() else {}
            digest = message.get("aux", {}).get("Digest") or digest
            if "error" in message:
                print(f"labctl: error: {message['error']}", file=sys.stderr)
                failed = True
            elif not args.quiet and message.get("status") and not message.get("progressDetail"):
                print(f"{message.get('id', '')}{': ' if message.get('id') else ''}{message['status']}")
    conn.close()
    if args.quiet and digest:
        print(digest)
    return 1 if failed else 0


def exec_(path: str, args) -> int:
    if args.tty:
        raise Error("labctl exec -t through the daemon: not in the lean client (use docker exec -it)")
    made = call(path, "POST", f"/containers/{args.container}/exec",
                {"Cmd": args.command, "AttachStdout": True, "AttachStderr": True, "Env": args.env,
                 "User": args.user or "", "WorkingDir": args.workdir or ""})
    conn = Connection(path)
    conn.send("POST", f"/exec/{made['Id']}/start", {"Detach": False, "Tty": False}, upgrade=True)
    conn.response(stream=True)
    _write_frames(conn.raw())
    conn.close()
    return call(path, "GET", f"/exec/{made['Id']}/json")["ExitCode"]


def dispatch(path: str, command: str, args) -> int:
    try:
        if command == "stop":
            return each(path, args.containers, "POST", "/containers/{name}/stop?t=" + str(int(args.time)))
        if command == "rm":
            return each(path, args.containers, "DELETE", "/containers/{name}?force=" + str(int(args.force)))
        return {"run": run, "ps": ps, "logs": logs, "images": images, "pull": pull, "push": push,
                "exec": exec_}[command](path, args)
    except Error as exc:
        print(f"labctl: error: {exc}", file=sys.stderr)
        return 1
