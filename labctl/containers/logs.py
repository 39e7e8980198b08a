"""`labctl logs [-f]`: a detached container's output, as `docker logs` shows it.

`labctl run -d` opens <state>/containers/<id>/log with O_APPEND and gives it to PID 1 as stdout and
stderr (runtime.run), so the file holds both streams in the order they were written; this module
reads it back, and with `follow` keeps reading what is appended until the container has exited.
"""
from __future__ import annotations

import time
from typing import BinaryIO

from labctl.containers.store import Container
from labctl.errors import LabError


def copy_log(container: Container, out: BinaryIO, follow: bool = False, poll_seconds: float = 0.1,
             offset: int = 0) -> None:
    """Write the container's log to `out` from `offset`; with `follow`, keep writing what it appends
    until it exits."""
    path = container.dir / "log"
    if not path.exists():
        raise LabError(f"{container.name} has no log", "only detached containers (-d) keep a log")
    with open(path, "rb") as log:
        log.seek(offset)
        while True:
            data = log.read()
            if data:
                out.write(data)
                out.flush()
            if not follow or container.status != "running":
                if follow:
                    out.write(log.read())   # what it wrote between the last read and its exit
                return
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
