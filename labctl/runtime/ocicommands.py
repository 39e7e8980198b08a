"""The five operations of the OCI runtime specification (runtime.md), as `labctl-runtime` (and runc)
carry them out; each is its own process, sharing only the state directory (ocistate.py).

    create ID   check config.json (nothing made if it is wrong), reserve <root>/<id> and journal it (for
                `labctl cleanup` after a crash: ocicleanup.py), make exec.fifo and the cgroup, fork PID 1
                through runtime/create.py (the supervisor S forks it and exits at once: PID 1 is left
                to the caller's subreaper, containerd's shim, as runc leaves it), run prestart +
                createRuntime hooks at READY, wait for CREATED, write state.json and --pid-file
    start ID    open exec.fifo for reading: PID 1's open(2) for writing returns, it writes "0" and goes on
                to exec; remove the FIFO (from now on the status is "running"); poststart hooks
    state ID    the state JSON: ociVersion, id, status, pid, bundle, annotations
    kill ID SIG kill(2) PID 1 (created or running)
    delete ID   refuse a container that is not stopped (created or running) unless --force (then
                SIGKILL); wait until PID 1 is gone; the cgroup, poststop hooks, the state directory
"""
from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from pathlib import Path

from labctl.errors import LabError
from labctl.runtime import hooks, oci, ocicleanup, ocistate

SIGNALS = {name: getattr(signal, name) for name in dir(signal) if name.startswith("SIG") and not name.startswith("SIG_")
           and isinstance(getattr(signal, name), signal.Signals)}


def parse_signal(text: str) -> int:
    """KILL, SIGKILL, kill or 9 -> 9; anything else a LabError."""
    text = str(text).strip()
    if text.isdigit() and 0 < int(text) < 65:
        return int(text)
    name = text.upper() if text.upper().startswith("SIG") else "SIG" + text.upper()
    if name in SIGNALS:
        return int(SIGNALS[name])
    raise LabError(f"invalid signal {text!r}", "give a name (TERM, SIGKILL) or a number from 1 to 64")


def _cgroup_for(container_id: str, doc: dict) -> dict:
    from labctl.runtime import ocicgroup
    return ocicgroup.create(container_id, doc.get("linux") or {})


def _remove_cgroup(info: dict | None) -> None:
    from labctl.runtime import ocicgroup
    ocicgroup.remove(info)


def create(root: str, container_id: str, bundle: str, pid_file: str | None = None,
           console_socket: str | None = None) -> dict:
    """`create` (the module docstring); returns the state."""
    bundle = str(Path(bundle).resolve())
    doc = oci.read_config(bundle)
    config = oci.from_oci(bundle, doc)   # a bad config.json stops here: nothing made yet
    if (doc.get("process") or {}).get("terminal") and not console_socket:
        raise LabError("process.terminal is true but no --console-socket was given",
                       "give --console-socket PATH (a Unix socket that receives the terminal's master)")
    path = ocistate.reserve(root, container_id)
    data = {"id": container_id, "bundle": bundle, "annotations": doc.get("annotations") or {},
            "hooks": doc.get("hooks") or {}, "status": "creating", "pid": 0,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "_dir": str(path),
            "creator": [os.getpid(), ocistate.process_start(os.getpid())]}   # a create under way: ocicleanup
    made = {}
    try:
        data["journal"] = ocicleanup.record(root, container_id, path, data["creator"])
        ocistate.save(path, _stored(data))
        os.mkfifo(path / "exec.fifo", 0o622)
        os.chmod(path / "exec.fifo", 0o622)   # (mkfifo went through the umask) writable by PID 1, whatever user it is
        config.oci.start_fifo = os.open(path / "exec.fifo", os.O_PATH | os.O_CLOEXEC)
        made["cgroup"] = data["cgroup"] = _cgroup_for(container_id, doc)
        config.cgroup = made["cgroup"]
        ocistate.save(path, _stored(data))   # the cgroup's path, for cleanup if this create is killed
        config.userns_fd = _user_namespace(config, doc)
        config.oci.state = ocistate.for_hook(data, "creating")
        _start_init(config, data, console_socket)
        ocistate.save(path, _stored(data))
        if pid_file:
            _write_atomically(pid_file, str(data["pid"]))
    except BaseException:
        _undo(data, made)
        raise
    finally:
        for fd in (config.oci.start_fifo, config.userns_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
    return ocistate.public(data)


def _stored(data: dict) -> dict:
    return {k: v for k, v in data.items() if k != "_dir"}


def _user_namespace(config, doc: dict) -> int:
    """A new user namespace with the bundle's maps (security/userns.py), or the one at its path."""
    spaces = {n["type"]: n.get("path") for n in (doc.get("linux") or {}).get("namespaces") or []}
    if "user" not in spaces:
        return -1
    if spaces["user"]:
        return os.open(spaces["user"], os.O_RDONLY | os.O_CLOEXEC)
    from labctl.security.userns import new_user_namespace
    return new_user_namespace(config.security.uid_map, config.security.gid_map)


def _start_init(config, data: dict, console_socket: str | None) -> None:
    """Fork PID 1 (runtime/create.py), the hooks at READY, GO, then wait for CREATED."""
    from labctl.kernel import handshake
    from labctl.runtime import create as runtime
    from labctl.runtime.stdio import Stdio, connect_console_socket
    stdio, sock = Stdio(), None
    if console_socket:
        sock = connect_console_socket(console_socket)
        stdio = Stdio(console=sock.fileno())
    try:
        created = runtime.create(config, stdio, lambda pid: os._exit(0), detach=False)
    finally:
        if sock is not None:
            sock.close()
    data.update(pid=created.pid, pid_start=ocistate.process_start(created.pid))
    end = created._end
    try:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(created.child, 0)   # S, which exited once PID 1 was forked
        state = ocistate.for_hook(data, "created")
        hooks.run("prestart", data["hooks"].get("prestart"), state)
        hooks.run("createRuntime", data["hooks"].get("createRuntime"), state)
        end.send_go()
        end.expect(handshake.CREATED, "creating the container failed",
                   "see the message above; `labctl doctor` checks the kernel features")
    finally:
        end.close()


def _undo(data: dict, made: dict) -> None:
    """A failed create: PID 1 killed, the cgroup and the state directory removed."""
    if data.get("pid"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(data["pid"], signal.SIGKILL)
        _wait_gone(data, 5)
    _remove_cgroup(made.get("cgroup"))
    ocistate.remove_dir(Path(data["_dir"]))
    ocicleanup.forget(data)


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def start(root: str, container_id: str) -> None:
    """`start`: release PID 1 from its FIFO (ociinit.wait_for_start), then poststart hooks."""
    data = ocistate.load(root, container_id)
    now = ocistate.status(data)
    if now != "created":
        raise LabError(f"cannot start container {container_id!r}: it is {now}",
                       "only a created container can be started; `state` shows its status")
    fifo = Path(data["_dir"]) / "exec.fifo"
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)   # a reader now: PID 1's open returns
    try:
        deadline = time.monotonic() + 10
        while not select.select([fd], [], [], 0.05)[0]:
            if ocistate.status(data) == "stopped" or time.monotonic() > deadline:
                raise LabError(f"container {container_id!r} stopped before it could start",
                               "see its output; `delete` it")
        if os.read(fd, 1) != b"0":
            raise LabError(f"container {container_id!r} did not start", "`delete` it and create it again")
    finally:
        os.close(fd)
    fifo.unlink()
    hooks.run_logged("poststart", data["hooks"].get("poststart"), ocistate.for_hook(data, "running"))


def kill(root: str, container_id: str, sig: str | int = "SIGTERM", all_processes: bool = False) -> None:
    data = ocistate.load(root, container_id)
    number = parse_signal(sig)
    if ocistate.status(data) == "stopped":
        raise LabError(f"container {container_id!r} is not running", "nothing to signal; `delete` it")
    pids = [data["pid"]]
    if all_processes and data.get("cgroup"):
        pids = _cgroup_pids(data["cgroup"]) or pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, number)


def _cgroup_pids(cgroup: dict) -> list[int]:
    pids = set()
    for directory in cgroup["dirs"].values():
        with contextlib.suppress(OSError):
            pids |= {int(p) for p in Path(directory, "cgroup.procs").read_text().split()}
    return sorted(pids)


def _wait_gone(data: dict, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while ocistate.process_start(data["pid"]) == data.get("pid_start") and data.get("pid_start") is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def delete(root: str, container_id: str, force: bool = False) -> None:
    """`delete`: see the module docstring."""
    data = ocistate.load(root, container_id)
    now = ocistate.status(data)
    if now != "stopped" and not force:   # the spec: only a stopped container may be deleted
        raise LabError(f"cannot delete container {container_id!r}: it is {now}",
                       f"stop it first (`kill {container_id} KILL`), or `delete --force`")
    if now != "stopped":
        with contextlib.suppress(ProcessLookupError):
            os.kill(data["pid"], signal.SIGKILL)
        if not _wait_gone(data, 10):
            raise LabError(f"container {container_id!r}'s PID 1 ({data['pid']}) did not die", "try again")
    _remove_cgroup(data.get("cgroup"))
    stopped = ocistate.for_hook(data, "stopped")
    ocistate.remove_dir(Path(data["_dir"]))
    ocicleanup.forget(data)
    hooks.run_logged("poststop", data["hooks"].get("poststop"), stopped)
