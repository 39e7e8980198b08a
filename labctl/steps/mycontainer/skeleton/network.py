"""Part 6 of mycontainer (step 6): plug a network namespace into a bridge: a veth pair, an address,
a default route, all by netlink (pyroute2's IPRoute speaks rtnetlink, man 7 rtnetlink).

Complete the TODOs; the rest is given. README.md in lab/06-networking explains the netlink calls.
"""
import sys

from pyroute2 import IPRoute   # installed in the lab's venv


def create_veth(host, host_ifname, peer):
    """A veth pair in the host's namespace: one end named host_ifname, the other peer."""
    # TODO 1: afterwards `ip -br link` on the host lists host_ifname and peer, two ends of one veth
    #         pair (man 4 veth). pyroute2: IPRoute.link with the "add" command and the veth kind, whose
    #         extra argument names the peer (pyroute2 docs, IPRoute, its link method: the veth example).
    pass


def attach_to_bridge(host, host_ifname, bridge):
    """The host end enslaved to the bridge, and up."""
    # TODO 2: afterwards `ip -br link` shows host_ifname UP with `master BRIDGE` (IFLA_MASTER is the
    #         bridge's interface index, IFLA_OPERSTATE/flags say up: man 7 rtnetlink). One "set" on the
    #         link can change both; index_of gives you the indexes.
    pass


def move_to_netns(host, peer, netns):
    """The peer moved into the network namespace at path `netns`."""
    # TODO 3: afterwards the peer is gone from the host (`ip link` no longer lists it) and is a link of
    #         the namespace `netns`. A link changes namespace with the IFLA_NET_NS_FD attribute (man 7
    #         rtnetlink; `ip link set ... netns`); pyroute2 accepts the namespace's path for it.
    pass


def configure_inside(ns, peer, address, prefixlen):
    """Inside: the peer renamed eth0, with the address, and eth0 and lo up."""
    # TODO 4: afterwards, inside (`ip netns exec NS ip -br addr`): the peer is named eth0, holds
    #         address/prefixlen, and eth0 and lo are both UP. RTM_NEWLINK renames and sets state,
    #         RTM_NEWADDR adds an address (man 7 rtnetlink; pyroute2's link and addr methods). `ns` is a
    #         netlink socket inside the namespace: its indexes are not the host's.
    pass


def add_default_route(ns, gateway):
    """Inside: every destination off the subnet goes via the gateway (the bridge's address)."""
    # TODO 5: afterwards `ip netns exec NS ip route` shows `default via GATEWAY dev eth0`: a route
    #         for 0.0.0.0/0 with a gateway (RTM_NEWROUTE, man 7 rtnetlink; pyroute2's route method).
    pass


# ---------------------------------------------------------------------------------------------
# Given: the same in the skeleton and the reference.

def index_of(ipr, name):
    """The interface index of link `name` (RTM_GETLINK), or a clear error if there is none."""
    found = ipr.link_lookup(ifname=name)
    if not found:
        sys.exit(f"exercise: there is no link named {name!r} here yet")
    return found[0]


def plug(netns, bridge, host_ifname, cidr, gateway):
    """Plug the namespace (a name in /run/netns, or a path such as /proc/PID/ns/net) into `bridge`."""
    address, prefixlen = cidr.split("/")[0], int(cidr.split("/")[1])
    netns = f"/run/netns/{netns}" if "/" not in netns else netns
    peer = "labp" + host_ifname[4:]   # the peer's name until it is inside the namespace
    with IPRoute() as host:           # a netlink socket in the host's network namespace
        create_veth(host, host_ifname, peer)
        attach_to_bridge(host, host_ifname, bridge)
        move_to_netns(host, peer, netns)
    with IPRoute(netns=netns) as ns:  # a netlink socket inside the namespace: its links, its routes
        configure_inside(ns, peer, address, prefixlen)
        add_default_route(ns, gateway)
