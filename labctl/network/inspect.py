"""Reading the network back from the kernel, for the demo, the check, the notebook, the tests and
`labctl network ls` (Docker's `docker network ls` and `inspect`; `ip link`, `ip addr`, `ip route`):

    links(netns, prefix)    every link: kind, master, state, IPv4 addresses, packet counters (RTM_GETLINK)
    routes(netns)           the main routing table as `ip route` prints it (RTM_GETROUTE)
    link_stats(name)        one link, or None
    known_networks()        the default network and every one the lab has allocated addresses on
A netns is a PID, a name in /run/netns or a path (netns.netns_path); None is the host's.
"""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from labctl.network import Network, default_network, ipam
from labctl.network.netlink import iproute


@dataclass
class LinkInfo:
    name: str
    index: int
    kind: str | None
    state: str
    up: bool
    master: str | None
    addresses: list[str]
    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0


def links(netns: int | str | None = None, prefix: str = "") -> list[LinkInfo]:
    """Every link (RTM_GETLINK dump) with its kind, master, state, IPv4 addresses and counters."""
    with iproute(netns) as ipr:
        dump = list(ipr.link("dump"))
        names = {m["index"]: m.get("ifname") for m in dump}
        addrs: dict[int, list[str]] = {}
        for a in ipr.addr("dump", family=socket.AF_INET):
            addrs.setdefault(a["index"], []).append(f"{a.get('address')}/{a['prefixlen']}")
        out = []
        for m in dump:
            name = m.get("ifname")
            if not name.startswith(prefix):
                continue
            stats = m.get("stats64") or {}
            out.append(LinkInfo(name, m["index"], m.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND"),
                                m.get("operstate") or "", bool(m["flags"] & 1), names.get(m.get("master")), addrs.get(m["index"], []),
                                stats.get("rx_packets", 0), stats.get("rx_bytes", 0),
                                stats.get("tx_packets", 0), stats.get("tx_bytes", 0)))
        return out


def routes(netns: int | str | None = None) -> list[str]:
    """The main routing table (RTM_GETROUTE dump, table 254) as `ip route` would print it."""
    with iproute(netns) as ipr:
        names = {m["index"]: m.get("ifname") for m in ipr.link("dump")}
        out = []
        for r in ipr.route("dump", family=socket.AF_INET, table=254):
            dst = f"{r.get('dst')}/{r['dst_len']}" if r.get("dst") else "default"
            via = f" via {r.get('gateway')}" if r.get("gateway") else ""
            out.append(f"{dst}{via} dev {names.get(r.get('oif'), r.get('oif'))}")
        return out


def link_stats(ifname: str, netns: int | str | None = None) -> LinkInfo | None:
    """The link named `ifname`, or None when there is none."""
    for link in links(netns):
        if link.name == ifname:
            return link
    return None


def known_networks() -> list[Network]:
    """The default network, and every network with an allocation file in the state directory."""
    found = {default_network().bridge: default_network()}
    for bridge in ipam.bridges_with_allocations():
        if bridge not in found:
            subnet = _subnet_of(bridge)
            if subnet:
                found[bridge] = Network(bridge, subnet)
    return list(found.values())


def _subnet_of(bridge: str) -> str | None:
    """The subnet of an existing bridge, from its IPv4 address."""
    link = link_stats(bridge)
    if not link or not link.addresses:
        return None
    return str(ipaddress.IPv4Interface(link.addresses[0]).network)
