"""The container's network (step 6), through labctl.network: the one integration point with that module.

  none    a new network namespace with only `lo` (PID 1 brings it up itself)
  host    no network namespace: the host's interfaces, ports and /etc/hosts
  bridge  a new network namespace, a veth pair to the lab bridge, an address, NAT and published ports,
          attached by labctl from outside (by PID 1's PID) before the command runs
"""
from __future__ import annotations

import socket

from labctl.errors import LabError

MODES = ("none", "host", "bridge")


def needs_namespace(mode: str) -> bool:
    if mode not in MODES:
        raise LabError(f"unknown network mode {mode!r}", "use --network none, host or bridge")
    return mode != "host"


def etc_files(mode: str, hostname: str, address: str | None = None) -> dict[str, str]:
    """Content of /etc/hosts, /etc/hostname and /etc/resolv.conf for the container."""
    if mode == "host":
        hosts = _read("/etc/hosts")
        resolv = _read("/etc/resolv.conf")
        hostname = socket.gethostname()
    else:
        hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        if address:
            hosts += f"{address}\t{hostname}\n"
        else:
            hosts += f"127.0.1.1\t{hostname}\n"
        resolv = ""
        if mode == "bridge":
            try:
                from labctl import network
                return network.container_files(hostname, address)
            except (ImportError, AttributeError):
                pass
    return {"/etc/hosts": hosts, "/etc/hostname": hostname + "\n", "/etc/resolv.conf": resolv}


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def attach(mode: str, container_name: str, pid: int, ports: list) -> dict | None:
    """Connect PID 1's network namespace (bridge mode): returns what detach() needs."""
    if mode != "bridge":
        return None
    try:
        from labctl import network
    except ImportError:
        raise LabError("--network bridge needs the networking step (labctl.network)",
                       "use --network none or host") from None
    return network.attach(pid, mode, name=container_name,
                          ports=[(p.host_port, p.container_port, p.protocol) for p in ports])


def detach(info: dict | None) -> None:
    if not info:
        return
    from labctl import network
    network.detach(info)
