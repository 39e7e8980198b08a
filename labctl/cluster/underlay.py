"""The underlay: the network the lab's hosts share, as a switch joins real machines.

make_underlay() creates the namespace lab-underlay with a bridge labul0 (10.206.0.254/24: etcd listens
there); add_host() creates a host's namespace and joins it with a veth pair, in netlink messages:
  1. RTM_NEWLINK kind veth in the root namespace: labuhN and its peer labupN (lab* names, so that a
     crash before step 2 leaves links the teardown knows);
  2. RTM_SETLINK IFLA_NET_NS_FD: labuhN into lab-underlay, enslaved to labul0 (IFLA_MASTER), up;
  3. RTM_SETLINK IFLA_NET_NS_FD: labupN into lab-hostN, renamed eth0, 10.206.0.N/24, up, and lo up.
No default route and no NAT: a host reaches the other hosts and etcd, and nothing else.

remove_namespaces() undoes it all: a namespace goes when its last reference does (its bind mount in
/run/netns and the processes in it: hosts.py kills those first), and the veth pairs go with it.
"""
from __future__ import annotations

import contextlib
import os
import re

from labctl.cluster import STORE_ADDRESS, UNDERLAY_BRIDGE, UNDERLAY_NS, UNDERLAY_PREFIXLEN, Host
from labctl.network.netlink import delete_link, iproute
from labctl.network.netns import in_netns, netns_path
from labctl.network.sysctl import quiet_ipv6

UNDERLAY_MAC = "02:42:0a:ce:00:fe"   # locally administered; Docker's rule, 02:42 and the IPv4 address


def _new_netns(name: str) -> None:
    """`ip netns add NAME` (pyroute2 forks a child that unshares and bind-mounts /run/netns/NAME)."""
    from pyroute2 import netns as pyroute2_netns
    pyroute2_netns.create(name)


def make_underlay() -> None:
    """lab-underlay with the bridge labul0 up, holding the store's address; lo up (etcd's 127.0.0.1)."""
    _new_netns(UNDERLAY_NS)
    with iproute(UNDERLAY_NS) as ns:
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        # A bridge without an address of its own takes the lowest MAC among its ports, so it would change
        # as hosts join, and the hosts' ARP caches would send etcd's traffic to a MAC gone (seconds lost
        # until the entry is probed again). Given one, it keeps it.
        ns.link("add", ifname=UNDERLAY_BRIDGE, kind="bridge", address=UNDERLAY_MAC)
        index = ns.link_lookup(ifname=UNDERLAY_BRIDGE)[0]
        in_netns(UNDERLAY_NS, quiet_ipv6, UNDERLAY_BRIDGE)
        ns.addr("add", index=index, address=STORE_ADDRESS, prefixlen=UNDERLAY_PREFIXLEN)
        ns.link("set", index=index, state="up")


def add_host(host: Host) -> None:
    """The host's namespace, and its veth pair: one end on the underlay bridge, the other its eth0."""
    _new_netns(host.netns)
    outer, inner = host.underlay_ifname, f"labup{host.index}"
    with iproute() as ipr:
        ipr.link("add", ifname=outer, kind="veth", peer=inner)
        _move(ipr, ipr.link_lookup(ifname=outer)[0], UNDERLAY_NS)
        _move(ipr, ipr.link_lookup(ifname=inner)[0], host.netns)
    with iproute(UNDERLAY_NS) as ns:
        in_netns(UNDERLAY_NS, quiet_ipv6, outer)
        ns.link("set", index=ns.link_lookup(ifname=outer)[0], master=ns.link_lookup(ifname=UNDERLAY_BRIDGE)[0],
                state="up")
    with iproute(host.netns) as ns:
        index = ns.link_lookup(ifname=inner)[0]
        ns.link("set", index=index, ifname="eth0")
        in_netns(host.netns, quiet_ipv6, "eth0")
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        ns.addr("add", index=index, address=host.address, prefixlen=UNDERLAY_PREFIXLEN)
        ns.link("set", index=index, state="up")


def _move(ipr, index: int, netns: str) -> None:
    fd = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        ipr.link("set", index=index, net_ns_fd=fd)
    finally:
        os.close(fd)


#: A host's namespace, lab-hostN, and those of its overlay networks and endpoints (vxlan.py).
HOST_NETNS = re.compile(r"lab-host\d+(-ov\d+|-ep-[\w.-]+)?")


def lab_namespaces() -> list[str]:
    """The cluster's namespaces that exist: lab-underlay, lab-hostN and their overlay and endpoint ones."""
    if not os.path.isdir("/run/netns"):
        return []
    return sorted(n for n in os.listdir("/run/netns") if n == UNDERLAY_NS or HOST_NETNS.fullmatch(n))


def namespace_inode(name: str) -> int | None:
    with contextlib.suppress(OSError):
        return os.stat(netns_path(name)).st_ino
    return None


def remove_namespaces() -> None:
    """The veth ends a crash left in the root namespace, then every cluster namespace's bind mount
    (`ip netns del`); with no process left in them, the kernel frees them and their links."""
    from labctl.network.netns import remove_netns
    with iproute() as ipr:
        names = [m.get_attr("IFLA_IFNAME") for m in ipr.link("dump")]
    for name in names:
        if name.startswith(("labuh", "labup")):
            delete_link(name)
    for name in lab_namespaces():
        remove_netns(name)
