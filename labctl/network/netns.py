"""Network namespaces: named by a PID or by a name, joined by one thread, created and removed.

    netns_path(1234)           /proc/1234/ns/net    a process's namespace (a container's)
    netns_path("lab-up-lab0")  /run/netns/lab-up-lab0, a named one, as `ip netns add` makes
    in_netns(1234, f, *args)   f(*args) in a thread that joined that namespace (setns(2))
    socket_in_netns(1234)      a socket that lives in that namespace for good

A network namespace belongs to a thread, not to the whole process: that is what lets in_netns step
into a container's network for one call while the rest of the program stays on the host.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from labctl import state
from labctl.errors import LabError
from labctl.kernel.syscalls import CLONE_NEWNET, setns


def netns_path(target: int | str) -> str:
    """/proc/<pid>/ns/net for a PID, /run/netns/<name> for a named namespace, or a path as given."""
    if isinstance(target, int) or str(target).isdigit():
        return f"/proc/{int(target)}/ns/net"
    return str(target) if "/" in str(target) else f"/run/netns/{target}"


def in_netns(target: int | str, func: Callable[..., Any], *args: Any) -> Any:
    """Run func(*args) in a new thread that joined the network namespace `target` (setns(2), CLONE_NEWNET).

    A network namespace belongs to a thread, not to the whole process, so one short-lived thread can
    step in, make sockets there (they stay in that namespace for life) and end, while the rest of the
    program stays on the host. (The mount and user namespaces cannot be joined like this.)"""
    result: dict[str, Any] = {}

    def body() -> None:
        try:
            fd = os.open(netns_path(target), os.O_RDONLY | os.O_CLOEXEC)
            try:
                setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
            result["value"] = func(*args)
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=body, name=f"netns {target}")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


def socket_in_netns(target: int | str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket created inside another network namespace: it binds, listens and connects there."""
    return in_netns(target, socket.socket, family, kind)


def create_netns(name: str) -> state.Record:
    """`ip netns add NAME`: unshare(CLONE_NEWNET) in a child, bind-mount its /proc/self/ns/net on
    /run/netns/NAME so the namespace outlives the child."""
    from pyroute2 import netns as pyroute2_netns
    if not name.startswith("lab-"):
        raise LabError(f"bad namespace name {name!r}", "the lab's network namespaces are named lab-*")
    if os.path.exists(netns_path(name)):
        raise LabError(f"the network namespace {name} exists already",
                       f"pick another name, or remove it (`ip netns del {name}`, `labctl cleanup`)")
    rec = state.record("netns", remove_netns, name=name)
    pyroute2_netns.create(name)
    return rec


def remove_netns(name: str) -> None:
    """`ip netns del NAME`: detach the bind mount that keeps the namespace alive, remove the file."""
    from labctl.kernel.syscalls import MNT_DETACH, umount2
    path = netns_path(name)
    with contextlib.suppress(OSError):
        umount2(path, MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
