"""The per-link switches the lab flips in /proc/sys/net: forwarding, route_localnet, IPv6 off.

Per link, never the global net.ipv4.ip_forward: IPv4 decides whether to forward by the link a packet
arrives on, so switching it on for the lab's bridge routes what containers send and changes nothing
else on the host. The files under net/ipv4/conf/<link>/ disappear with the link.
"""
from __future__ import annotations

import contextlib
from pathlib import Path


def write_sysctl(path: str, value: str) -> None:
    """Write /proc/sys/...; the per-interface ones (net/ipv4/conf/<link>/...) vanish with the link."""
    with open(path, "w") as f:
        f.write(value)


def enable_forwarding(ifname: str) -> None:
    """net.ipv4.conf.<ifname>.forwarding=1: route the packets that arrive on this link."""
    write_sysctl(f"/proc/sys/net/ipv4/conf/{ifname}/forwarding", "1")


def ip_forwarding(ifname: str) -> bool:
    """Whether the host forwards what arrives on this link (False when there is no such link)."""
    try:
        return Path(f"/proc/sys/net/ipv4/conf/{ifname}/forwarding").read_text().strip() == "1"
    except FileNotFoundError:
        return False


def quiet_ipv6(ifname: str) -> None:
    """No IPv6 on the lab's links: no link-local address, so no router solicitations or MLD reports."""
    with contextlib.suppress(FileNotFoundError):
        write_sysctl(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "1")
