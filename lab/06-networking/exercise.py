#!/usr/bin/env python3
"""Step 6 exercise: plug a network namespace into a bridge with a veth pair, an address and a route.

Usage (as root):  python3 exercise.py NETNS BRIDGE HOST_IFNAME ADDRESS/PREFIX GATEWAY
   e.g.           python3 exercise.py lab-mine lab0 labmine 10.203.0.50/24 10.203.0.1
                  (the namespace and the bridge must exist: README.md shows how to make them;
                  `labctl check 6` makes both for you)
Judge it with:    labctl check 6

Complete the lines marked TODO. README.md in this folder explains the netlink calls.
"""
import os
import sys
from pathlib import Path

# labctl and the packages it uses (pyroute2, psutil) are installed in the lab's virtual environment,
# .venv beside lab/: the Python `labctl check` runs exercises with. Started by Debian's python3
# (`sudo python3 exercise.py ...`), which has neither? Then start again in the venv's Python.
LAB_PYTHON = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python"
if sys.prefix == sys.base_prefix and LAB_PYTHON.exists() and sys.executable != str(LAB_PYTHON):
    os.execv(LAB_PYTHON, [str(LAB_PYTHON), *sys.argv])

from pyroute2 import IPRoute  # noqa: E402


def index_of(ipr, name):
    """The interface index of link `name` (RTM_GETLINK), or a clear error if there is none."""
    found = ipr.link_lookup(ifname=name)
    if not found:
        sys.exit(f"exercise: there is no link named {name!r} here yet")
    return found[0]


def main():
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    netns, bridge, host_ifname, cidr, gateway = sys.argv[1:]
    address, prefixlen = cidr.split("/")[0], int(cidr.split("/")[1])
    netns = f"/run/netns/{netns}" if "/" not in netns else netns
    peer = "labp" + host_ifname[4:]  # the peer's name until it is inside the namespace

    host = IPRoute()  # a netlink socket in the host's network namespace
    # TODO 1: create a veth pair: one end named host_ifname, the other named peer.
    #         host.link("add", ifname=..., kind="veth", peer=...)

    # TODO 2: put the host end on the bridge (master=the bridge's index) and bring it up (state="up").
    #         host.link("set", index=index_of(host, host_ifname), master=..., state="up")

    # TODO 3: move the peer into the namespace (IFLA_NET_NS_FD: pyroute2 accepts the namespace's path).
    #         host.link("set", index=index_of(host, peer), net_ns_fd=netns)

    host.close()

    ns = IPRoute(netns=netns)  # a netlink socket inside the namespace: its links, its routes
    # TODO 4: inside, rename the peer to eth0, give eth0 the address, bring eth0 and lo up.
    #         ns.link("set", index=..., ifname="eth0");  ns.addr("add", index=..., address=..., prefixlen=...)

    # TODO 5: add the default route via the gateway (the bridge's address).
    #         ns.route("add", dst="0.0.0.0/0", gateway=...)

    ns.close()


if __name__ == "__main__":
    main()
