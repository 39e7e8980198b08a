"""Step 10's demonstrations and measurements: one bundle, three OCI runtimes (labctl-runtime, runc,
crun), driven through the same command line and compared by what the kernel shows of the containers
they made; the lifecycle with the state JSON at each stage; the time each phase takes.

Each runtime keeps its state under a temporary --root, and every container is deleted (--force) on the
way out, also after a failure.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from labctl.runtime import peers
from labctl.security.profile import in_force

KINDS = ("pid", "mnt", "uts", "ipc", "net", "cgroup", "user")


def make_bundle(directory: str | os.PathLike, argv: list[str], flags: dict | None = None) -> Path:
    """`labctl bundle busybox DIR ARGV`: the lab's busybox image and labctl run's defaults."""
    from labctl.containers.bundle import write_bundle
    from labctl.containers.lifecycle import build_spec
    spec, image = build_spec("busybox", argv, hostname="oci-demo", **(flags or {}))
    return write_bundle(spec, image, directory)


@contextlib.contextmanager
def runtime_root(name: str):
    root = tempfile.mkdtemp(prefix=f"labctl-oci-{name}-")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def call(name: str, root: str, *words: str, check: bool = True) -> subprocess.CompletedProcess:
    """One command of runtime `name`. Its output goes through files, not pipes: PID 1 inherits the
    stdout and stderr of `create` and would keep a pipe open (a reader would wait for its end)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        code = subprocess.run(peers.command(name) + ["--root", root, *words], stdout=out, stderr=err,
                              stdin=subprocess.DEVNULL, timeout=60).returncode
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(words, code, out.read(), err.read())
    if check and done.returncode != 0:
        from labctl.errors import LabError
        raise LabError(f"{name} {words[0]} failed: {done.stderr.strip()[-300:]}", "see the runtime's message")
    return done


def state(name: str, root: str, cid: str) -> dict:
    return json.loads(call(name, root, "state", cid).stdout)


def kernel_view(pid: int) -> dict:
    """What the kernel says of a container's PID 1: new namespaces, its cgroup, its mount table, its
    capabilities, no_new_privs and seccomp mode."""
    new = [k for k in KINDS if os.readlink(f"/proc/{pid}/ns/{k}") != os.readlink(f"/proc/self/ns/{k}")]
    with open(f"/proc/{pid}/cgroup") as f:
        lines = [l.strip().split(":", 2) for l in f if l.strip()]
    memory = next((p for _, c, p in lines if "memory" in c.split(",")), None) or next((p for h, _, p in lines if h == "0"), "")
    with open(f"/proc/{pid}/mountinfo") as f:
        mounts = [(l.split()[4], l.split(" - ")[1].split()[0]) for l in f]
    view = in_force(pid)
    return {"new namespaces": " ".join(new), "cgroup (memory)": memory, "mounts": len(mounts),
            "mount points": " ".join(sorted(m for m, _ in mounts)), "CapEff": len(view["CapEff"]),
            "CapBnd": len(view["CapBnd"]), "NoNewPrivs": view["NoNewPrivs"],
            "Seccomp": f"{view['Seccomp']} ({view['Seccomp_filters']} filter)" if view["Seccomp_filters"] else view["Seccomp"],
            "hostname": _hostname_of(pid)}


def _hostname_of(pid: int) -> str:
    """uname's nodename in the process's UTS namespace (/proc/sys/kernel/hostname shows the reader's)."""
    from labctl.kernel.namespaces import hostname_of
    return hostname_of(pid)


def compare(bundle: str | os.PathLike, names: list[str] | None = None, started: bool = True) -> dict[str, dict]:
    """Run the bundle's container with each runtime, read kernel_view of its PID 1, delete it. With
    started=False the view is taken between create and start, which shows *when* each runtime applies
    what: runc drops capabilities and loads seccomp before PID 1 waits on exec.fifo, labctl after."""
    views = {}
    for name in names or peers.available():
        with runtime_root(name) as root:
            cid = f"cmp-{name}-{os.getpid()}"
            try:
                call(name, root, "create", "--bundle", str(bundle), cid)
                if started:
                    call(name, root, "start", cid)
                    time.sleep(0.1)   # until the program has exec'd
                views[name] = kernel_view(state(name, root, cid)["pid"])
            finally:
                call(name, root, "delete", "--force", cid, check=False)
    return views


def lifecycle(bundle: str | os.PathLike, name: str = "labctl") -> list[tuple[str, dict | None]]:
    """create -> state -> start -> state -> kill -> state -> delete, with the state JSON after each."""
    stages = []
    with runtime_root(name) as root:
        cid = f"life-{os.getpid()}"
        try:
            call(name, root, "create", "--bundle", str(bundle), cid)
            stages.append(("create", state(name, root, cid)))
            call(name, root, "start", cid)
            stages.append(("start", state(name, root, cid)))
            call(name, root, "kill", cid, "KILL")
            deadline = time.monotonic() + 5
            while (s := state(name, root, cid))["status"] != "stopped" and time.monotonic() < deadline:
                time.sleep(0.02)
            stages.append(("kill KILL", s))
            call(name, root, "delete", cid)
            gone = call(name, root, "state", cid, check=False)
            stages.append(("delete", None if gone.returncode else json.loads(gone.stdout)))
        finally:
            call(name, root, "delete", "--force", cid, check=False)
    return stages


def time_phases(bundle: str | os.PathLike, name: str, repeat: int = 5) -> dict[str, list[float]]:
    """Seconds each phase takes (create, start, delete) for a container of `bundle` whose program ends
    at once (/bin/true), `repeat` times: the runtime's own cost, as a caller pays it."""
    times: dict[str, list[float]] = {"create": [], "start": [], "delete": []}
    with runtime_root(name) as root:
        for i in range(repeat):
            cid = f"t-{name}-{os.getpid()}-{i}"
            try:
                for phase, words in (("create", ("create", "--bundle", str(bundle), cid)), ("start", ("start", cid))):
                    t0 = time.perf_counter()
                    call(name, root, *words)
                    times[phase].append(time.perf_counter() - t0)
                deadline = time.monotonic() + 5
                while state(name, root, cid)["status"] != "stopped" and time.monotonic() < deadline:
                    time.sleep(0.005)
                t0 = time.perf_counter()
                call(name, root, "delete", cid)
                times["delete"].append(time.perf_counter() - t0)
            finally:
                call(name, root, "delete", "--force", cid, check=False)
    return times
