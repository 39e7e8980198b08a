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


def copy_log(container: Container, out: BinaryIO, follow: bool = False, poll_seconds: float = 0.1) -> None:
    """Write the container's log to `out`; with `follow`, keep writing what it appends until it exits."""
    path = container.dir / "log"
    if not path.exists():
        raise LabError(f"{container.name} has no log", "only detached containers (-d) keep a log")
    with open(path, "rb") as log:
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
