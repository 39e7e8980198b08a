"""The network's bridge and its nftables table: created with the network's first container, removed
with its last (Docker's bridge driver does the same for docker0's user-defined siblings).

ensure_bridge(net), called with the network's lock held (ipam.lock), in order:
  1. refuse a subnet the host already routes (eth0's, another lab network's);
  2. RTM_NEWLINK kind bridge; RTM_NEWADDR: the gateway address, the subnet's first; link up;
  3. forwarding and route_localnet on the bridge only (sysctl.py, nat.publish_ports say why);
  4. load the nftables table (nat.table_script).
A bridge that exists already is checked instead: it must be a bridge, and hold the gateway address.
"""
from __future__ import annotations

import ipaddress
import socket
from typing import Any

from labctl import state
from labctl.errors import LabError
from labctl.network import Network, default_network, ipam
from labctl.network.nat import delete_nft_table, nft, nft_table_json, table_script
from labctl.network.netlink import delete_link, iproute
from labctl.network.sysctl import enable_forwarding, quiet_ipv6, write_sysctl


def ensure_bridge(net: Network) -> None:
    """Create the bridge (with the gateway address) and the nftables table, unless they exist.
    Called with the network's lock held."""
    with iproute() as ipr:
        found = ipr.link_lookup(ifname=net.bridge)
        if found:
            _check_existing_bridge(ipr, net, found[0])
        else:
            check_subnet_is_free(ipr, net.ip_network)
            state.record("bridge", remove_bridge, bridge=net.bridge, table=net.table)
            ipr.link("add", ifname=net.bridge, kind="bridge")
            index = ipr.link_lookup(ifname=net.bridge)[0]
            quiet_ipv6(net.bridge)
            ipr.addr("add", index=index, address=net.gateway, prefixlen=net.prefixlen)
            ipr.link("set", index=index, state="up")
            # route_localnet lets host→127.0.0.1:PORT be DNATed out of this bridge (see nat.publish_ports).
            enable_forwarding(net.bridge)
            write_sysctl(f"/proc/sys/net/ipv4/conf/{net.bridge}/route_localnet", "1")
    if nft_table_json(net.table) is None:
        state.record("nftables", delete_nft_table, table=net.table)
        nft(table_script(net))


def _check_existing_bridge(ipr: Any, net: Network, index: int) -> None:
    kind = ipr.link("get", index=index)[0].get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
    if kind != "bridge":
        raise LabError(f"a link named {net.bridge} exists and is a {kind}, not a bridge",
                       f"remove it (`ip link del {net.bridge}`) or choose another bridge name")
    have = [a.get_attr("IFA_ADDRESS") for a in ipr.addr("dump", index=index, family=socket.AF_INET)]
    if net.gateway not in have:
        raise LabError(f"the bridge {net.bridge} exists with {', '.join(have) or 'no address'}, "
                       f"not the gateway {net.gateway} of {net.subnet}",
                       "use that bridge's subnet (LABCTL_SUBNET), or another bridge (LABCTL_BRIDGE)")


def check_subnet_is_free(ipr: Any, subnet: ipaddress.IPv4Network) -> None:
    """Refuse a subnet the host already routes somewhere (eth0's, another lab network's)."""
    for route in ipr.route("dump", family=socket.AF_INET, table=254):
        dst = route.get("dst")
        if dst and ipaddress.IPv4Network(f"{dst}/{route['dst_len']}").overlaps(subnet):
            raise LabError(f"the subnet {subnet} overlaps {dst}/{route['dst_len']}, already routed on this host",
                           "choose another one, e.g. LABCTL_SUBNET=10.213.0.0/24")


def remove_bridge(bridge: str, table: str, force: bool = False) -> bool:
    """The network's shared objects: its nftables table and its bridge. Unless forced, a bridge that
    still has ports (veths of containers started by another labctl, with another state directory) is
    left alone: the kernel's view decides, not our allocation file. Returns whether they went."""
    if not force and _bridge_ports(bridge):
        return False
    delete_nft_table(table)
    delete_link(bridge)
    return True


def _bridge_ports(bridge: str) -> list[str]:
    with iproute() as ipr:
        found = ipr.link_lookup(ifname=bridge)
        if not found:
            return []
        return [m.get("ifname") for m in ipr.link("dump") if m.get("master") == found[0]]


def remove_bridge_if_unused(net: Network) -> None:
    """What detach() does last: the bridge and the table go when no live container holds an address."""
    with ipam.lock(net.bridge):
        if not ipam.in_use(net.bridge) and remove_bridge(net.bridge, net.table):
            _forget_network_records(net)


def ensure_network(net: Network | None = None) -> Network:
    """Create the network's bridge and nftables table now (attach() does it on demand)."""
    net = net or default_network()
    with ipam.lock(net.bridge):
        ensure_bridge(net)
    return net


def remove_network(net: Network | None = None, refuse_in_use: bool = False) -> None:
    """Remove the bridge and its table now (`labctl network rm`): whatever still uses them, or, with
    refuse_in_use (`docker network rm`), only when no live container holds an address of it."""
    net = net or default_network()
    with ipam.lock(net.bridge):
        if refuse_in_use and ipam.in_use(net.bridge):
            raise LabError(f"the network {net.bridge} has active endpoints: containers still on it",
                           "remove those containers first (`docker network inspect` lists them)")
        remove_bridge(net.bridge, net.table, force=True)
        ipam.forget_network(net.bridge)
        _forget_network_records(net)


def _forget_network_records(net: Network) -> None:
    state.forget_records("nftables", table=net.table)
    state.forget_records("bridge", bridge=net.bridge)
