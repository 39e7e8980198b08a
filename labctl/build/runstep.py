"""RUN: the command in a real step-7 container on the image built so far; its upper directory is the layer.

    the image so far ──(manifest + config put in the store)──▶ lifecycle.create: overlay of its
    layers + an empty upper dir, a cgroup, the namespaces (network none unless asked), the record
    ──▶ lifecycle.start: PID 1 runs `/bin/sh -c CMD` (or the exec form), stdout+stderr into a pipe
    that the builder streams ──▶ exit: the supervisor unmounts the overlay; upper/ stays, holding
    exactly what the command changed (files, whiteouts, opaque dirs) ──▶ diff.py makes the layer
    ──▶ the container is removed (record, cgroup, upper dir): nothing stays but the layer

The runtime bind-mounts /etc/hosts, /etc/hostname and /etc/resolv.conf over files it creates in the
upper directory when the image lacks them; those empty mount points are the runtime's, not the
command's, and are left out of the layer (Docker keeps them in an "init layer" it never commits).
A command that fails ends the build with its exit code; the container goes all the same.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from labctl.errors import LabError


class RunFailed(LabError):
    def __init__(self, where: str, command: str, code: int):
        super().__init__(f"{where}: the command '{command}' returned a non-zero code: {code}",
                         "fix the command (its output is above), then build again: the steps before it are cached")
        self.exit_code = code


@dataclass
class RunRequest:
    manifest_digest: str     # the image so far, stored
    image_config: dict       # its config's "config" object (Env, User, WorkingDir)
    argv: list[str]
    extra_env: dict          # ARG values in scope (not kept in the image)
    network: str = "none"


def _spec(req: RunRequest):
    from labctl.containers import spec as specs
    from labctl.containers.spec import ContainerSpec
    env = list(req.image_config.get("Env") or [])
    names = {e.split("=", 1)[0] for e in env}
    env += [f"{k}={v}" for k, v in req.extra_env.items() if k not in names]   # ENV wins over ARG
    return ContainerSpec(image=req.manifest_digest, argv=req.argv, env=specs.merge_env(env, [], "", False),
                         workdir=req.image_config.get("WorkingDir") or "/",
                         user=req.image_config.get("User") or "root", hostname="", network=req.network)


def _stream(fd: int, output: Callable[[str], None]) -> None:
    """The RUN's output, line by line, until every writer closed the pipe (os.read retries EINTR itself)."""
    pending = b""
    while data := os.read(fd, 65536):
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            output(line.decode(errors="replace"))
    if pending:
        output(pending.decode(errors="replace"))


def runtime_files(upper: Path, lowers: list[Path], files: list[str]) -> frozenset[str]:
    """The mount points the runtime created in `upper` (empty files the image below lacks): skipped."""
    from labctl.build.files import lower_entry
    skip = set()
    for inside in files:
        rel = inside.lstrip("/")
        path = upper / rel
        if path.is_file() and not path.is_symlink() and path.stat().st_size == 0 and lower_entry(lowers, rel) is None:
            skip.add(rel)
    return frozenset(skip)


def run(req: RunRequest, lowers: list[Path], output: Callable[[str], None], where: str, text: str,
        make_layer: Callable[[Path, frozenset[str]], object]):
    """Run the command; on success return make_layer(upper dir, paths to skip). The container is removed
    in every case (success, failure, Ctrl-C)."""
    from labctl.containers import images, lifecycle, store, supervisor
    from labctl.kernel.overlay import ContainerRoot
    from labctl.runtime.stdio import Stdio
    spec = _spec(req)
    image = images.RunnableImage(req.manifest_digest, req.manifest_digest, req.image_config)
    container, config = lifecycle.create(spec, image)
    try:
        output(f" ---> Running in {container.short_id}")
        r, w = os.pipe()
        stdio = Stdio(os.open(os.devnull, os.O_RDONLY), w, w)
        try:
            supervisor_pid = lifecycle.start(container, config, stdio)
        finally:
            stdio.close()
        try:
            _stream(r, output)
        finally:
            os.close(r)
        # PID 1 and everything it started have closed the pipe: the supervisor (our child) is ending.
        # Its exit status is the command's (no signal forwarding: a build may run in a daemon's thread)
        code = supervisor.wait_for(supervisor_pid)
        if code != 0:
            raise RunFailed(where, text, code)
        upper = ContainerRoot.open(container.id).upper
        return make_layer(upper, runtime_files(upper, lowers, list(config.files)))
    finally:
        with contextlib.suppress(store.NoSuchContainer):
            lifecycle.remove(store.load(container.id), force=True)
