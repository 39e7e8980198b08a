"""Fault injection the suite keeps, so each step's code is probed as a hostile-but-fair user would.

Two tools:
- FaultyProxy: a TCP proxy in front of the REAL registry (Debian's docker-registry) that misbehaves on
  demand: answers with error statuses, cuts a blob response after N bytes, trickles a blob at a few bytes a
  second, stalls a blob forever after N bytes, or answers every request with a redirect to itself. It
  exists because a real server cannot be made to do these things on demand; everything it forwards comes
  from the real registry.
- kill_randomly(): starts a command in its own process group, SIGKILLs that group after a random delay,
  and returns when it is gone: the "kill -9 at a random moment" half of the probe.

Every fault is bounded: the proxy only listens on 127.0.0.1 and is closed by the test that made it.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import threading
import time


class FaultyProxy:
    """127.0.0.1:<port> -> 127.0.0.1:<upstream>, with faults on the responses to blob GETs.

    statuses:       answer the first requests with these HTTP statuses (503, 429, ...) instead of forwarding
    cut_after/cuts: close the connection after `cut_after` bytes of the bodies of the first `cuts` blob responses
    rate:           send the bodies of blob responses at this many bytes a second (a slow registry; the
                    headers go at once)
    min_blob_size:  apply rate and stall_after only to blobs of at least this many bytes (a layer, not
                    the small config before it)
    stall_after:    send this many bytes of a blob's body, then send nothing more and keep the
                    connection open until the proxy is closed (a stalled transfer)
    redirect_loop:  answer every blob GET with 307 to the same URL (a redirect loop)
    """

    def __init__(self, upstream: int, *, statuses: tuple[int, ...] = (), cut_after: int = 1 << 40, cuts: int = 0,
                 rate: float | None = None, stall_after: int | None = None, redirect_loop: bool = False,
                 min_blob_size: int = 0):
        self.upstream = upstream
        self.statuses = list(statuses)
        self.cut_after, self.cuts = cut_after, cuts
        self.rate, self.stall_after, self.redirect_loop = rate, stall_after, redirect_loop
        self.min_blob_size = min_blob_size
        self.slowed = 0          # blob responses the rate or the stall has been applied to
        self.errors_sent = self.blob_requests = self.cut_done = self.redirects_sent = 0
        self.closed = threading.Event()
        self._clients: list[socket.socket] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> "FaultyProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.closed.set()
        self.sock.close()
        for client in list(self._clients):
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            client.close()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self._clients.append(client)
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        upstream = None
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            while not self.closed.is_set():
                request = client.recv(65536)
                if not request:
                    return
                if self.statuses:
                    status = self.statuses.pop(0)
                    self.errors_sent += 1
                    client.sendall(f"HTTP/1.1 {status} Busy\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n".encode())
                    continue
                is_blob = b"/blobs/sha256:" in request and request.startswith(b"GET ")
                if is_blob:
                    self.blob_requests += 1
                if is_blob and self.redirect_loop:
                    path = request.split(b" ")[1].decode()
                    self.redirects_sent += 1
                    client.sendall(f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {path}\r\n"
                                   "Content-Length: 0\r\n\r\n".encode())
                    continue
                upstream.sendall(request)
                if not self._relay_response(client, upstream, is_blob):
                    return
        except OSError:
            return
        finally:
            client.close()
            if upstream:
                upstream.close()

    def _relay_response(self, client: socket.socket, upstream: socket.socket, is_blob: bool) -> bool:
        """Forward one response, applying the faults to a blob's. False when the connection is done."""
        cut = is_blob and self.cut_done < self.cuts
        sent, remaining, head, slow = 0, None, b"", False
        while remaining is None or remaining > 0:
            chunk = upstream.recv(65536)
            if not chunk:
                return False
            if remaining is None:
                head += chunk
                if b"\r\n\r\n" not in head:
                    continue          # the whole head first: it is sent at once, only the body is slowed
                header, chunk = head.split(b"\r\n\r\n", 1)
                lengths = [l for l in header.split(b"\r\n") if l.lower().startswith(b"content-length:")]
                length = int(lengths[0].split(b":")[1]) if lengths else 0
                remaining = length - len(chunk)
                slow = is_blob and length >= self.min_blob_size and (self.rate or self.stall_after is not None)
                self.slowed += bool(slow)
                client.sendall(header + b"\r\n\r\n")   # `sent` counts the body's bytes from here
            else:
                remaining -= len(chunk)
            if cut and sent + len(chunk) > self.cut_after:
                self.cut_done += 1
                client.sendall(chunk[:self.cut_after - sent])
                client.shutdown(socket.SHUT_RDWR)
                return False
            if slow and self.stall_after is not None and sent + len(chunk) > self.stall_after:
                client.sendall(chunk[:self.stall_after - sent])
                self.closed.wait()          # hold the connection open, sending nothing, until closed
                return False
            if slow and self.rate:
                for i in range(0, len(chunk), max(1, int(self.rate))):
                    if self.closed.is_set():
                        return False
                    client.sendall(chunk[i:i + max(1, int(self.rate))])
                    time.sleep(1.0)
            else:
                client.sendall(chunk)
            sent += len(chunk)
        return True


def kill_randomly(argv: list[str], low: float, high: float, *, env: dict | None = None,
                  rng: random.Random | None = None) -> float:
    """Start argv in a new process group, SIGKILL the whole group after a random delay in [low, high]
    seconds, and reap it. Returns the delay used (for the failure message of a test)."""
    rng = rng or random.Random()
    delay = rng.uniform(low, high)
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    return delay
