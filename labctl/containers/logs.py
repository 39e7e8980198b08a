"""`labctl logs [-f]`: a detached container's output, as `docker logs` shows it.

A detached container (`labctl run -d`, or any the daemon starts) writes its stdout and stderr into one
pipe, and its supervisor copies the pipe into <state>/containers/<id>/log (O_APPEND), so the file holds
both streams in the order they were written; this module reads it back, and with `follow` keeps
reading what is appended until the container has exited.

Why a pipe and not the file itself as PID 1's stdout: a file cannot say when each line was written
(`logs -t`). The supervisor, copying, notes before each chunk where in the log it begins and when it
arrived, in <id>/log.times:

    log        hello\nworld\n                 (the bytes, as ever: logs without -t reads only this)
    log.times  0 1764597600123456789\n         (offset of the chunk, time.time_ns() it was read)
               6 1764597601123456789\n

A line gets the time of the chunk it begins in, as dockerd stamps what its copier reads. The supervisor
writes the times (supervisor.py: only os and sys, so not through this module) in this format, and the
daemon's terminal copier too (daemon/engine.py, through append()).
"""
from __future__ import annotations

import bisect
import os
import time
from typing import BinaryIO, Iterable

from labctl.containers.store import Container
from labctl.errors import LabError


def copy_log(container: Container, out: BinaryIO, follow: bool = False, poll_seconds: float = 0.1,
             offset: int = 0, timestamps: bool = False) -> None:
    """Write the container's log to `out` from `offset`; with `follow`, keep writing what it appends
    until it exits; with `timestamps`, each line after the time it was written (Stamper)."""
    path = container.dir / "log"
    if not path.exists():
        raise LabError(f"{container.name} has no log", "only detached containers (-d) keep a log")
    stamper = Stamper(path, offset) if timestamps else None
    if stamper is not None and not stamper.has_times():
        raise no_times(container.name)
    with open(path, "rb") as log:
        log.seek(offset)
        while True:
            data = log.read()
            if not follow or not (container.status == "running" or container.supervisor_alive()):
                if follow:
                    data += log.read()   # what it wrote between the last read and its exit
                out.write(stamper.feed(data) + stamper.flush() if stamper else data)
                out.flush()
                return
            if data:
                out.write(stamper.feed(data) if stamper else data)
                out.flush()
            time.sleep(poll_seconds)


def parse_tail(text: str) -> int:
    """--tail N: a number of lines."""
    if not text.isdigit():
        raise LabError(f"--tail {text!r} is not a number of lines", "give e.g. --tail 10, or --tail all")
    return int(text)


def last_lines(path, count: int) -> int:
    """The offset in the file where its last `count` lines begin (`logs --tail N`)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return 0
    position = len(data) - 1 if data.endswith(b"\n") else len(data)
    for _ in range(count):
        position = data.rfind(b"\n", 0, position)
        if position < 0:
            return 0
    return position + 1 if count else len(data)


def times_path(log_path) -> str:
    return f"{log_path}.times"


def append(log: int, times: int, data: bytes) -> None:
    """One chunk into the log, its offset and time first into log.times (a reader who sees the bytes
    finds their time)."""
    os.write(times, f"{os.fstat(log).st_size} {time.time_ns()}\n".encode())
    os.write(log, data)


def stamp(ns: int) -> bytes:
    """RFC 3339 with nine digits of nanoseconds, in UTC: how `docker logs -t` prints a line's time."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode() + b".%09dZ" % nanos


class Stamper:
    """Prefixes each line of a log, read from `offset` on in chunks, with the time of the chunk of
    log.times it begins in. Holds a partial last line until the rest of it (or flush()) comes."""

    def __init__(self, log_path, offset: int):
        self.times_file = times_path(log_path)
        self.offsets: list[int] = []             # where each chunk begins in the log, in the order written
        self.times: list[int] = []                # and when it was read (ns since the epoch)
        self.read_to = 0                          # how far log.times has been read
        self.offset = offset                      # the log offset of the next byte fed
        self.partial = b""
        self.partial_at = offset

    def has_times(self) -> bool:
        return os.path.exists(self.times_file)

    def _time_of(self, offset: int) -> int:
        if not self.offsets or self.offsets[-1] < offset:
            with open(self.times_file, "rb") as f:
                f.seek(self.read_to)
                data = f.read()
            complete = data[:data.rfind(b"\n") + 1]
            self.read_to += len(complete)
            for line in complete.splitlines():
                at, ns = line.split()
                self.offsets.append(int(at))
                self.times.append(int(ns))
        index = bisect.bisect_right(self.offsets, offset)   # the last chunk that begins at or before it
        return self.times[index - 1] if index else 0

    def feed(self, chunk: bytes) -> bytes:
        """The complete lines so far, each with its time in front."""
        data, start = self.partial + chunk, self.partial_at
        self.offset += len(chunk)
        out = []
        position = 0
        while (end := data.find(b"\n", position)) >= 0:
            out.append(stamp(self._time_of(start + position)) + b" " + data[position:end + 1])
            position = end + 1
        self.partial, self.partial_at = data[position:], start + position
        return b"".join(out)

    def flush(self) -> bytes:
        """The last line, if it had no newline."""
        rest, self.partial = self.partial, b""
        return stamp(self._time_of(self.partial_at)) + b" " + rest if rest else b""


def timestamped(chunks: Iterable[bytes], log_path, offset: int) -> Iterable[bytes]:
    stamper = Stamper(log_path, offset)
    for chunk in chunks:
        if out := stamper.feed(chunk):
            yield out
    if out := stamper.flush():
        yield out


def no_times(name: str) -> LabError:
    return LabError(f"{name}'s log has no times (no log.times): an older labctl gave its PID 1 the log file "
                    "itself, which cannot say when each line came",
                    "drop -t, or run the container again (`labctl rm` it, then `labctl run -d`)")
