"""A small TCP tool of the lab's own: an echo/sink server, and clients that measure round-trip time and
throughput. Standard library only, so it starts fast inside a network namespace.

    python -m labctl.demos.nettool serve --port 7                 # prints "listening 0.0.0.0:7", serves forever
    python -m labctl.demos.nettool rtt 10.203.0.2 7 --count 500   # JSON: round-trip times in microseconds
    python -m labctl.demos.nettool throughput 10.203.0.2 7 --mb 64
    python -m labctl.demos.nettool whoami 10.204.0.2 7            # the address the server saw us come from

The protocol is one command line per connection:
    ECHO\\n        then every byte sent comes back (ping-pong with small messages measures latency)
    SINK N\\n      the server reads N bytes, then answers "OK N\\n" (bulk transfer measures throughput)
    WHO\\n         the server answers with the client's address as it sees it ("10.204.0.1:41234\\n"),
                  which shows NAT at work
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from typing import Callable

CHUNK = 256 * 1024


def _recv_line(sock: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte:
            break
        data += byte
    return data.decode(errors="replace").strip()


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ConnectionError("the peer closed the connection")
        buf += chunk
    return bytes(buf)


def handle(conn: socket.socket, peer: tuple) -> None:
    """Serve one connection."""
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        command = _recv_line(conn)
        if command == "ECHO":
            while data := conn.recv(65536):
                conn.sendall(data)
        elif command.startswith("SINK "):
            remaining = int(command.split()[1])
            while remaining > 0:
                chunk = conn.recv(min(CHUNK, remaining))
                if not chunk:
                    return
                remaining -= len(chunk)
            conn.sendall(f"OK {command.split()[1]}\n".encode())
        elif command == "WHO":
            conn.sendall(f"{peer[0]}:{peer[1]}\n".encode())


def serve(listener: socket.socket, stop: threading.Event | None = None) -> None:
    """Accept connections on a listening socket, one thread each, until `stop` is set."""
    listener.settimeout(0.2 if stop else None)
    while not (stop and stop.is_set()):
        try:
            conn, peer = listener.accept()
        except socket.timeout:
            continue
        except OSError:
            return  # the listener was closed
        conn.settimeout(None)
        threading.Thread(target=handle, args=(conn, peer), daemon=True).start()


def listen(host: str = "0.0.0.0", port: int = 0, make_socket: Callable[[], socket.socket] | None = None
           ) -> socket.socket:
    sock = make_socket() if make_socket else socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    return sock


class Server:
    """An in-process server on a listening socket (which may live in another network namespace)."""

    def __init__(self, listener: socket.socket):
        self.listener = listener
        self.port = listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=serve, args=(listener, self._stop), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.listener.close()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def connect(host: str, port: int, timeout: float = 5.0,
            make_socket: Callable[[], socket.socket] | None = None) -> socket.socket:
    """Connect, retrying while the server is still starting (connection refused) until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        sock = make_socket() if make_socket else socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            sock.connect((host, port))
            sock.settimeout(30)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except (ConnectionRefusedError, socket.timeout, OSError):
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def measure_rtt(host: str, port: int, count: int = 200, size: int = 64, **kw) -> list[float]:
    """Round-trip times in microseconds of `count` ping-pongs of `size` bytes on one connection."""
    with connect(host, port, **kw) as sock:
        sock.sendall(b"ECHO\n")
        payload = b"x" * size
        times = []
        for _ in range(count + 10):
            start = time.perf_counter()
            sock.sendall(payload)
            _recv_exactly(sock, size)
            times.append((time.perf_counter() - start) * 1e6)
        return times[10:]  # the first round trips warm up caches and the ARP entry


def measure_throughput(host: str, port: int, total_bytes: int = 64 << 20, **kw) -> float:
    """Bytes per second for sending `total_bytes` and hearing that all of them arrived."""
    payload = b"\0" * CHUNK
    with connect(host, port, **kw) as sock:
        start = time.perf_counter()
        sock.sendall(f"SINK {total_bytes}\n".encode())
        remaining = total_bytes
        while remaining > 0:
            n = min(remaining, CHUNK)
            sock.sendall(payload[:n])
            remaining -= n
        answer = _recv_line(sock)
        elapsed = time.perf_counter() - start
    if answer != f"OK {total_bytes}":
        raise ConnectionError(f"the server answered {answer!r}")
    return total_bytes / elapsed


def whoami(host: str, port: int, **kw) -> str:
    """The address and port the server saw this connection come from."""
    with connect(host, port, **kw) as sock:
        sock.sendall(b"WHO\n")
        return _recv_line(sock)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labctl.demos.nettool", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=7)
    for name in ("rtt", "throughput", "whoami"):
        p = sub.add_parser(name)
        p.add_argument("host")
        p.add_argument("port", type=int)
        p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the server")
        if name == "rtt":
            p.add_argument("--count", type=int, default=200)
            p.add_argument("--size", type=int, default=64)
        if name == "throughput":
            p.add_argument("--mb", type=float, default=64)
    args = parser.parse_args(argv)
    if args.command == "serve":
        listener = listen(args.host, args.port)
        print(f"listening {args.host}:{listener.getsockname()[1]}", flush=True)
        serve(listener)
        return 0
    if args.command == "rtt":
        times = measure_rtt(args.host, args.port, args.count, args.size, timeout=args.timeout)
        result = {"rtt_us": times, "median_us": statistics.median(times)}
    elif args.command == "throughput":
        rate = measure_throughput(args.host, args.port, int(args.mb * (1 << 20)), timeout=args.timeout)
        result = {"bytes_per_second": rate}
    else:
        result = {"seen_as": whoami(args.host, args.port, timeout=args.timeout)}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
