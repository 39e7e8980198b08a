"""Containers to trace: a step 1–2 container whose PID 1 is a shell that runs the commands it is sent.

The tests, the check, the demo, the notebook and the benchmark all need "a container, and known
commands executed in it on cue"; this is that, built from namespaces.spawn and rootfs.
"""
from __future__ import annotations

import contextlib
import os
import select
import time
from pathlib import Path
from typing import Iterator

from labctl import labimage, namespaces, rootfs
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


# A memory limit for a traced container, so `--oom` has something to see. Step 3's cgroups module is
# the full treatment (v1 and v2, every controller); this is the few lines the tracing demos and tests
# need, following the same conventions: under a `labctl` cgroup beneath our own, journaled first.


def _own_memory_cgroup() -> tuple[Path, int]:
    """(directory of our own memory cgroup, cgroup version), from /proc/self/cgroup."""
    with open("/proc/self/cgroup") as f:
        lines = f.read().splitlines()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory" + path), 1
    from labctl.tracing import cgroup2_mount
    mount = cgroup2_mount()
    for line in lines:
        if line.startswith("0::") and mount:
            return Path(mount + line[3:]), 2
    raise LabError("no memory cgroup controller on this machine", "see `labctl doctor`")


def remove_cgroup_dir(path: str) -> None:
    """rmdir(2) a cgroup directory (and its `labctl` parent if now empty); gone already is fine."""
    for directory in (Path(path), Path(path).parent):
        with contextlib.suppress(FileNotFoundError, OSError):
            if directory.name.startswith("labctl"):
                directory.rmdir()


@contextlib.contextmanager
def memory_limited(pid: int, limit_bytes: int, name: str) -> Iterator[Path]:
    """Move process `pid` (and so its future children) into a new memory cgroup limited to limit_bytes."""
    from labctl import state
    own, version = _own_memory_cgroup()
    parent = own / "labctl"
    if version == 2 and "memory" not in (own / "cgroup.subtree_control").read_text().split():
        raise LabError("the memory controller is not enabled for children of this cgroup (cgroup v2)",
                       "run the lab from a delegated cgroup, e.g. a systemd unit with Delegate=yes")
    path = parent / f"labctl-{name}"
    rec = state.record("cgroup", remove_cgroup_dir, path=str(path))
    try:
        parent.mkdir(exist_ok=True)
        if version == 2:
            with contextlib.suppress(OSError):
                (parent / "cgroup.subtree_control").write_text("+memory")
        path.mkdir()
        limit_file = "memory.limit_in_bytes" if version == 1 else "memory.max"
        (path / limit_file).write_text(str(limit_bytes))
        if version == 2:
            (path / "memory.swap.max").write_text("0")
        (path / "cgroup.procs").write_text(str(pid))
        yield path
    finally:
        remove_cgroup_dir(str(path))
        if not path.exists():
            rec.forget()


def oom_kills(path: Path) -> int:
    """How many processes the kernel OOM-killed in this memory cgroup (memory.oom_control or memory.events)."""
    for name in ("memory.events", "memory.oom_control"):
        with contextlib.suppress(FileNotFoundError):
            for line in (path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    return 0


@contextlib.contextmanager
def in_cgroup2(pid: int, name: str) -> Iterator[Path]:
    """Move `pid` into a new, empty cgroup v2 directory (no controllers): enough for a cgroup-id scope."""
    from labctl import state
    from labctl.tracing import cgroup2_mount
    mount = cgroup2_mount()
    if mount is None:
        raise LabError("this machine has no cgroup2 file system", "scope by PID namespace only")
    with open("/proc/self/cgroup") as f:
        own = next(line[3:].strip() for line in f if line.startswith("0::"))
    path = Path(mount + own.rstrip("/")) / "labctl" / f"labctl-{name}"
    rec = state.record("cgroup", remove_cgroup_dir, path=str(path))
    try:
        path.mkdir(parents=True)
        (path / "cgroup.procs").write_text(str(pid))
        yield path
    finally:
        with contextlib.suppress(OSError):
            for member in (path / "cgroup.procs").read_text().split():
                (path.parent.parent / "cgroup.procs").write_text(member)   # back where they came from
        remove_cgroup_dir(str(path))
        if not path.exists():
            rec.forget()
