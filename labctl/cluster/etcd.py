"""The cluster store's process: Debian's etcd (etcd-server, 3.4), one member, run by the lab in the
underlay namespace, so it listens on the underlay's address and on that namespace's own 127.0.0.1,
and on no address of the real host.

    etcd --name lab --data-dir <state>/cluster/etcd
         --listen-client-urls http://10.206.0.254:2379,http://127.0.0.1:2379
         --listen-peer-urls http://127.0.0.1:2380     (one member: the peer port is for itself)

start() joins the namespace between fork and exec (setns(2) in preexec_fn), writes <state>/cluster/
etcd.pid (PID and start time: a recycled PID is never taken for it) and waits for /health to answer.
stop() sends SIGTERM to that PID (SIGKILL after 5 s) and removes the data directory.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time

from labctl import state
from labctl.cluster import STORE_ADDRESS, STORE_PORT, UNDERLAY_NS, cluster_dir
from labctl.errors import LabError


def etcd_binary() -> str:
    """The etcd program, or one line saying how to install it."""
    found = shutil.which("etcd")
    if not found:
        raise LabError("etcd is not installed: the cluster needs it as its store",
                       "apt-get install -y etcd-server python3-etcd3 (vagrant/provision.sh installs both)")
    return found


def data_dir() -> str:
    return str(cluster_dir() / "etcd")


def pid_file() -> str:
    return str(cluster_dir() / "etcd.pid")


def join_netns(name: str):
    """A preexec_fn: the child joins the namespace /run/netns/NAME before it execs."""
    from labctl.kernel.syscalls import CLONE_NEWNET, setns
    from labctl.network.netns import netns_path
    path = netns_path(name)

    def enter() -> None:
        fd = os.open(path, os.O_RDONLY)
        setns(fd, CLONE_NEWNET)
        os.close(fd)
    return enter


def start(timeout: float = 20.0) -> int:
    """etcd in the underlay namespace; returns its PID once it answers /health."""
    binary = etcd_binary()
    client = f"http://{STORE_ADDRESS}:{STORE_PORT}"
    argv = [binary, "--name", "lab", "--data-dir", data_dir(),
            "--listen-client-urls", f"{client},http://127.0.0.1:{STORE_PORT}", "--advertise-client-urls", client,
            "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
            "--initial-cluster", "lab=http://127.0.0.1:2380", "--log-level", "warn"]
    os.makedirs(data_dir(), mode=0o700, exist_ok=True)
    with open(cluster_dir() / "etcd.log", "ab") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True,
                                   start_new_session=True, preexec_fn=join_netns(UNDERLAY_NS))
    state.atomic_write_json(pid_file(), {"pid": process.pid, "start_time": state.process_start_time(process.pid)},
                            durable=False)
    from labctl.cluster import store
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LabError(f"etcd exited at once (status {process.returncode})", f"read {cluster_dir() / 'etcd.log'}")
        if store.healthy():
            return process.pid
        time.sleep(0.1)
    raise LabError(f"etcd did not answer on {client} within {timeout:.0f} s", f"read {cluster_dir() / 'etcd.log'}")


def running() -> dict | None:
    """{"pid", "start_time"} of the lab's etcd, if it runs."""
    try:
        with open(pid_file()) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    alive = state.process_start_time(info["pid"]) == info["start_time"] and \
        state.process_state(info["pid"]) not in ("Z", "X")
    return info if alive else None


def stop(timeout: float = 5.0) -> None:
    """SIGTERM to the recorded PID, SIGKILL after `timeout`; then the PID file and the data directory."""
    info = running()
    if info:
        with contextlib.suppress(ProcessLookupError):
            os.kill(info["pid"], signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while running() and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(info["pid"], os.WNOHANG)
            time.sleep(0.05)
        state.kill_process(info["pid"], info["start_time"])
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pid_file())
    shutil.rmtree(data_dir(), ignore_errors=True)
