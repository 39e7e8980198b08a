"""Refusing a published port that is taken, before anything is created (Docker's "port is already
allocated").

A DNAT rule for HOST_PORT captures every connection to it, so publishing a port someone already serves
would silently take it over. refuse_taken_ports() checks each `-p [IP:]HOST:CONTAINER`, in order:
  1. the host IP, if one is given, is an address of this host: bind(2) to it fails with
     EADDRNOTAVAIL otherwise (and the DNAT rule would never match);
  2. no other live container publishes the port: the lab's DNAT rules say which ports are published
     (nat.published_ports), their comments say by whom, the allocation files whether that one still lives;
  3. no host service listens on it: bind(2) with SO_REUSEADDR fails with EADDRINUSE only when a socket
     listens there (TCP) or is bound there (UDP). The default host IP binds 0.0.0.0, because its rule
     matches every address of the host.
`labctl run` calls it before it creates the container; attach() again under the network's lock, so two
runs publishing one port at once cannot both pass.
"""
from __future__ import annotations

import errno
import socket
from collections.abc import Iterable

from labctl.errors import LabError
from labctl.network.ports import DEFAULT_HOST_IP, PortMapping


def refuse_taken_ports(ports: Iterable[PortMapping]) -> None:
    """Raise LabError for the first port that is not ours to publish (see the module docstring)."""
    ports = list(ports)
    if not ports:
        return
    from labctl.network.nat import published_ports
    taken = [(mapping, owner) for mapping, owner in published_ports() if owner_is_live(owner)]
    for port in ports:
        bind_address = "0.0.0.0" if port.host_ip == DEFAULT_HOST_IP else port.host_ip
        _bind_test(port, bind_address, check_local_only=True)
        for other, owner in taken:
            if _overlap(port, other):
                raise _allocated(port, bind_address, f"container {owner.rsplit('-', 2)[0]} publishes it")
        _bind_test(port, bind_address, check_local_only=False)


def _overlap(port: PortMapping, other: PortMapping) -> bool:
    """Whether two published ports catch the same connections: one protocol and port, and the same
    host IP or one of them the default (which matches every address of the host)."""
    same_port = (port.protocol, port.host_port) == (other.protocol, other.host_port)
    return same_port and (port.host_ip == other.host_ip or DEFAULT_HOST_IP in (port.host_ip, other.host_ip))


def _bind_test(port: PortMapping, address: str, check_local_only: bool) -> None:
    """bind(2) a socket of the port's protocol to address:HOST_PORT, and close it at once."""
    kind = socket.SOCK_STREAM if port.protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # TIME_WAIT leftovers are no owner
        try:
            probe.bind((address, 0 if check_local_only else port.host_port))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise LabError(f"the host IP {address} of -p {port} is not an address of this host",
                               "give one of the host's addresses (`ip -br addr`), or drop the IP: -p HOST:CONTAINER")
            if exc.errno == errno.EADDRINUSE and not check_local_only:
                raise _allocated(port, address, "a host service listens on it")
            raise LabError(f"cannot publish -p {port}: bind({address}:{port.host_port}) failed: {exc.strerror}",
                           "choose another host port or host IP") from exc


def _allocated(port: PortMapping, address: str, why: str) -> LabError:
    return LabError(f"Bind for {address}:{port.host_port} failed: port is already allocated ({why})",
                    "choose another host port (-p OTHER:CONTAINER), or stop what uses this one")


def owner_is_live(owner: str) -> bool:
    """Whether the owner tag of a DNAT rule still holds a live address in one of the lab's networks.
    A rule whose owner this state directory does not know (another state directory's) counts as live."""
    from labctl.network import ipam
    for bridge in ipam.bridges_with_allocations():
        for entry in ipam.read_allocations(bridge).values():
            if entry.get("owner") == owner:
                return ipam.is_live(entry)
    return True
