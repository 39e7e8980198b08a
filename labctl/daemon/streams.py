"""Streams: the hijacked connection of attach and exec start, the 8-byte frames, a log file followed.

Hijacking. `docker run` (foreground) and `docker exec` send

    POST /containers/ID/attach?stream=1&stdout=1&stderr=1    Connection: Upgrade, Upgrade: tcp

and the daemon answers `101 UPGRADED` (headers only): from then on the connection is no longer HTTP
but a raw two-way pipe: the client's bytes are the container's stdin, the daemon's its output. In
aiohttp's terms: the response headers go out, then the protocol's parser is replaced by one that hands
the incoming bytes to us (as its WebSocket support does), and we write to the transport directly.

Multiplexing. Without a TTY, stdout and stderr share that one pipe, so each chunk goes in a frame:

    [stream: 1 byte (0 stdin, 1 stdout, 2 stderr)][0 0 0][size: 4 bytes, big-endian][size bytes of data]

With a TTY there is only the terminal: the bytes go raw, unframed. (A container's log file holds its
stdout and stderr in one file, in the order they were written: the lab sends both as stream 1.)
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import struct

from aiohttp import web

FRAME = struct.Struct(">BxxxL")
RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
POLL = 0.05   # seconds between looks at a log file that has not grown


def frame(stream: int, data: bytes) -> bytes:
    """One multiplexed frame: the 8-byte header, then the data."""
    return FRAME.pack(stream, len(data)) + data


class _Incoming(asyncio.Protocol):
    """Takes aiohttp's place as the transport's protocol once the connection is hijacked: the client's
    bytes go to a queue, and its EOF (it closed its writing half: stdin ended) leaves the transport
    open for the output still to come (eof_received returns True)."""

    def __init__(self, inner: asyncio.Protocol):
        self.inner = inner
        self.queue: asyncio.Queue = asyncio.Queue()

    def data_received(self, data: bytes) -> None:
        self.queue.put_nowait(bytes(data))

    def eof_received(self) -> bool:
        self.queue.put_nowait(b"")
        return True

    def connection_lost(self, exc) -> None:
        self.queue.put_nowait(b"")
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class _Hijacked(web.StreamResponse):
    """What the handler returns once it has written to the socket itself: aiohttp writes nothing more."""

    async def prepare(self, request):
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


class Hijacked:
    """A hijacked connection: write() sends raw bytes, read() returns the client's (b"" at its EOF)."""

    def __init__(self, request: web.Request):
        self.request = request
        self.protocol = request.protocol
        self.transport = request.transport
        self.incoming = _Incoming(self.protocol)

    @classmethod
    async def open(cls, request: web.Request, tty: bool) -> "Hijacked":
        upgrade = "upgrade" in request.headers.get("Connection", "").lower()
        status = "101 UPGRADED" if upgrade else "200 OK"
        headers = [f"HTTP/1.1 {status}", f"Content-Type: {RAW_STREAM if tty else MULTIPLEXED}"]
        if upgrade:
            headers += ["Connection: Upgrade", "Upgrade: tcp"]
        conn = cls(request)
        conn.protocol.keep_alive(False)
        conn.transport.set_protocol(conn.incoming)
        tail = getattr(conn.protocol, "_message_tail", b"")   # bytes that came with the headers
        if tail:
            conn.incoming.data_received(tail)
        conn.transport.write(("\r\n".join(headers) + "\r\n\r\n").encode())
        return conn

    def response(self) -> web.StreamResponse:
        return _Hijacked(status=101)

    @property
    def closed(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    async def write(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionResetError("the client went away")
        self.transport.write(data)
        await self.protocol._drain_helper()

    async def read(self) -> bytes:
        return await self.incoming.queue.get()

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(OSError):
                if self.transport.can_write_eof():
                    self.transport.write_eof()
            self.transport.close()


async def copy_in(conn: Hijacked, fd: int, at_eof=None) -> None:
    """The client's bytes into fd (a pipe to the process's stdin, or a pty master) until the client's
    EOF; then at_eof() (which closes the pipe: the process reads EOF too)."""
    try:
        while True:
            data = await conn.read()
            if not data:
                break
            while data:
                try:
                    data = data[os.write(fd, data):]
                except BlockingIOError:
                    await asyncio.sleep(POLL)
    except OSError:
        pass
    if at_eof is not None:
        at_eof()


async def follow_file(path, offset: int, done: asyncio.Future | None, grew: asyncio.Event | None = None):
    """The bytes of a log file from `offset`: all of it, then (with `done`, a future that resolves when
    the writer has ended) what is appended, until `done` and the last bytes are read. `path` may be the
    file already open (attach opens it early: a --rm container's supervisor removes it when done)."""
    try:
        f = path if hasattr(path, "read") else open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        f.seek(offset)
        while True:
            data = f.read(1 << 16)
            if data:
                yield data
                continue
            if done is None or done.done():
                rest = f.read()
                if rest:
                    yield rest
                return
            waiters = [done, asyncio.ensure_future(asyncio.sleep(POLL))]
            if grew is not None:
                grew.clear()
                waiters.append(asyncio.ensure_future(grew.wait()))
            _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in pending:
                if waiter is not done:
                    waiter.cancel()
