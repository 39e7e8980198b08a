"""Part 6 of mycontainer (step 6): plug a network namespace into a bridge: a veth pair, an address,
a default route, all by netlink (pyroute2's IPRoute speaks rtnetlink, man 7 rtnetlink).

The reference version (`labctl lab take 6` copies it into lab/mycontainer).
"""
import sys

from pyroute2 import IPRoute   # installed in the lab's venv


def create_veth(host, host_ifname, peer):
    """A veth pair in the host's namespace: one end named host_ifname, the other peer."""
    host.link("add", ifname=host_ifname, kind="veth", peer=peer)


def attach_to_bridge(host, host_ifname, bridge):
    """The host end enslaved to the bridge, and up."""
    host.link("set", index=index_of(host, host_ifname), master=index_of(host, bridge), state="up")


def move_to_netns(host, peer, netns):
    """The peer moved into the network namespace at path `netns`."""
    host.link("set", index=index_of(host, peer), net_ns_fd=netns)


def configure_inside(ns, peer, address, prefixlen):
    """Inside: the peer renamed eth0, with the address, and eth0 and lo up."""
    index = index_of(ns, peer)
    ns.link("set", index=index, ifname="eth0")
    ns.addr("add", index=index, address=address, prefixlen=prefixlen)
    ns.link("set", index=index, state="up")
    ns.link("set", index=index_of(ns, "lo"), state="up")


def add_default_route(ns, gateway):
    """Inside: every destination off the subnet goes via the gateway (the bridge's address)."""
    ns.route("add", dst="0.0.0.0/0", gateway=gateway)


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
