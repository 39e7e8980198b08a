"""Plugging a network namespace into a bridge with a veth pair: the core of step 6, and the reference
solution of lab/06-networking/exercise.py.

plug(), in order (each a netlink message; `ip link`/`ip addr`/`ip route` send the same):
  1. RTM_NEWLINK kind veth: a pair, the host end named HOST_IFNAME, the peer labp... (a lab* name,
     so cleanup knows it while it is still on the host);
  2. RTM_SETLINK on the host end: IFLA_MASTER = the bridge, up;
  3. RTM_SETLINK on the peer: IFLA_NET_NS_FD = the namespace; it leaves the host;
  4. inside the namespace: rename the peer to eth0, bring lo and eth0 up, RTM_NEWADDR the address;
  5. RTM_NEWROUTE: the default route via the gateway (the bridge's address).
"""
from __future__ import annotations

import os

from labctl import state
from labctl.errors import LabError
from labctl.network import IFNAMSIZ
from labctl.network.netlink import delete_link, iproute
from labctl.network.netns import in_netns, netns_path
from labctl.network.sysctl import quiet_ipv6


def plug(netns: int | str, bridge: str, host_ifname: str, address: str, prefixlen: int, gateway: str | None,
         what: str = "", inside_ifname: str = "eth0") -> state.Record:
    """Connect a network namespace to a bridge: veth pair, host end on the bridge, peer inside as eth0
    (or `inside_ifname`: eth1 for a second network, `docker network connect`) with an address and, if
    `gateway` is given, a default route via it. Returns the journal record of the veth."""
    if not host_ifname.startswith("lab") or len(host_ifname) > IFNAMSIZ:
        raise LabError(f"bad link name {host_ifname!r}", f"the lab's links are lab*, at most {IFNAMSIZ} characters")
    path = netns_path(netns)
    peer = "labp" + host_ifname[3:]  # lives in the host only until it moves; lab* so cleanup knows it
    peer = peer[:IFNAMSIZ]
    rec = state.record("veth", delete_link, ifname=host_ifname, what=what)
    try:
        with iproute() as ipr:
            bridges = ipr.link_lookup(ifname=bridge)
            if not bridges:
                raise LabError(f"there is no bridge {bridge}", "create the network first")
            ipr.link("add", ifname=host_ifname, kind="veth", peer=peer)
            host_index = ipr.link_lookup(ifname=host_ifname)[0]
            peer_index = ipr.link_lookup(ifname=peer)[0]
            quiet_ipv6(host_ifname)
            ipr.link("set", index=host_index, master=bridges[0], state="up")
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                ipr.link("set", index=peer_index, net_ns_fd=fd)
            finally:
                os.close(fd)
        with iproute(path) as ns:
            inside = ns.link_lookup(ifname=peer)[0]
            ns.link("set", index=inside, ifname=inside_ifname)
            in_netns(path, quiet_ipv6, inside_ifname)
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            ns.addr("add", index=inside, address=address, prefixlen=prefixlen)
            ns.link("set", index=inside, state="up")
            if gateway:
                ns.route("add", dst="0.0.0.0/0", gateway=gateway)
    except BaseException:
        state.undo_record(rec)  # half a plug is no plug: the pair goes, both ends
        raise
    return rec


def loopback_up(netns: int | str) -> None:
    """Network mode none: the namespace's own lo, up (RTM_SETLINK IFF_UP), and nothing else."""
    with iproute(netns) as ns:
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
