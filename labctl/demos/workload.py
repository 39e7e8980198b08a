"""Containers to trace: a step 1–2 container (namespaces, pivot_root) whose PID 1 is a shell that runs the commands it is sent.

The tests, the check, the demo, the notebook and the benchmark all need "a container, and known
commands executed in it on cue"; this is that, built from namespaces.spawn and rootfs.
"""
from __future__ import annotations

import contextlib
import os
import select
import time

from labctl.images import labimage
from labctl.kernel import namespaces, rootfs
from labctl.errors import LabError

SENTINEL = "__labctl_done__"


class ShellContainer:
    """busybox sh as PID 1 of new UTS/PID/IPC/mount namespaces on the lab's root filesystem,
    reading commands from a pipe. `run(command)` returns the command's output."""

    def __init__(self, hostname: str = "lab-traced"):
        root = labimage.ensure_busybox_rootfs()
        in_r, self._in_w = os.pipe()
        self._out_r, out_w = os.pipe()
        try:
            self.proc = namespaces.spawn(["/bin/sh"], hostname=hostname,
                                         setup=lambda: rootfs.setup_container_root(root),
                                         stdin=in_r, stdout=out_w, stderr=out_w, what=f"traced container {hostname}")
        except BaseException:
            for fd in (self._in_w, self._out_r):
                os.close(fd)
            raise
        finally:
            os.close(in_r)
            os.close(out_w)
        self.pid = self.proc.pid
        self.hostname = hostname

    def run(self, command: str, timeout: float = 15.0) -> str:
        """Run one shell command line inside; returns its output (stdout and stderr)."""
        os.write(self._in_w, f"{command}\necho {SENTINEL}\n".encode())
        out = b""
        deadline = time.monotonic() + timeout
        while SENTINEL.encode() not in out:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out_r], [], [], left)[0]:
                raise LabError(f"the container did not finish `{command}` within {timeout} s", "")
            chunk = os.read(self._out_r, 65536)
            if not chunk:
                raise LabError(f"the container exited while running `{command}`", "")
            out += chunk
        return out.decode(errors="replace").split(SENTINEL)[0]

    def close(self) -> None:
        self.proc.kill()          # SIGKILL to PID 1 ends the whole PID namespace
        for fd in (self._in_w, self._out_r):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> "ShellContainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def in_cgroup(pid: int, name: str, memory_limit_bytes: int | None = None):
    """Move process `pid` (and so its future children) into a new lab cgroup (step 3's labctl.kernel.cgroups),
    optionally with a memory limit, so `--oom` has something to see and a cgroup v2 id exists to scope
    by. Leaving the block removes the cgroup (killing what is left in it)."""
    from labctl.kernel import cgroups
    limits = cgroups.Limits(memory_bytes=memory_limit_bytes)
    with cgroups.Cgroup.create(name, limits) as cg:
        cg.add(pid)
        yield cg
