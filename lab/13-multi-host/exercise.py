#!/usr/bin/env python3
"""Step 13 exercise: two "hosts" (network namespaces) share an underlay, a link between their underlay
addresses; join them with an overlay: a VXLAN device in each, the overlay addresses on those devices,
and the forwarding table (FDB) entries that send each host's frames, wrapped in UDP, to the other.

Usage (as root):  labctl exercise 13 -- VNI NS_A UNDERLAY_A OVERLAY_A NS_B UNDERLAY_B OVERLAY_B
   e.g.           labctl exercise 13 -- 42 lab-c13-a 10.211.0.1 10.212.0.1/24 lab-c13-b 10.211.0.2 10.212.0.2/24
   (the README's Try it makes the two namespaces and their underlay link first)
Judge it with:    sudo labctl check 13

Complete the TODOs. The exercise stands on its own: Python's standard library and iproute2's `ip` and
`bridge` commands (pyroute2, netlink from Python, would do the same; the reference solution uses it).
"""
import subprocess
import sys

VXLAN_IF = "vx0"            # the VXLAN device's name in each namespace
VXLAN_PORT = 4789           # IANA's port for VXLAN (RFC 7348, section 5)


def run(*argv):
    """Run one iproute2 command; print it, so that you see what your program asked of the kernel."""
    print("+", " ".join(argv))
    subprocess.run(argv, check=True)


def make_vxlan(netns, vni, local):
    """The VXLAN device VXLAN_IF in `netns`, its tunnel's own end at the underlay address `local`."""
    # TODO 1: afterwards `netns` holds a device VXLAN_IF of type vxlan with the network identifier `vni`,
    #         whose packets leave from `local` to UDP port VXLAN_PORT, and which does NOT learn where
    #         MAC addresses live from the packets it receives: where to send is programmed (TODO 2).
    #         ip-link(8), "VXLAN Type Support": the options id, local, dstport and [no]learning (without
    #         dstport the kernel picks Linux's old, non-standard port). `ip -n NETNS ...` runs a command
    #         in a named namespace. RFC 7348, section 5, draws the packet this device makes.
    pass


def give_address(netns, overlay):
    """Given: the overlay address (ADDRESS/PREFIX) on VXLAN_IF, and the device up."""
    run("ip", "-n", netns, "address", "add", overlay, "dev", VXLAN_IF)
    run("ip", "-n", netns, "link", "set", VXLAN_IF, "up")


def program_fdb(netns, peer_underlay):
    """The forwarding entries of VXLAN_IF in `netns`: frames for the other host go to `peer_underlay`."""
    # TODO 2: afterwards the device's forwarding database (FDB) holds an entry whose destination is the
    #         peer's underlay address, so that the frames it sends (the ARP broadcast that asks for the
    #         peer's overlay address first, then unicast) leave as UDP to the peer. With learning off,
    #         no entry means nothing is ever sent. bridge(8), "bridge fdb add": an entry's MAC address,
    #         `dev`, `dst`; the all-zero MAC 00:00:00:00:00:00 is the VXLAN device's default destination,
    #         for every MAC it has no entry of its own for. `bridge fdb show dev VXLAN_IF` reads it back.
    pass


def main():
    if len(sys.argv) != 8:
        sys.exit(__doc__)
    vni = int(sys.argv[1])
    a = sys.argv[2:5]
    b = sys.argv[5:8]
    for (netns, underlay, overlay), (_, peer_underlay, _) in ((a, b), (b, a)):
        make_vxlan(netns, vni, underlay)
        give_address(netns, overlay)
        program_fdb(netns, peer_underlay)
    print(f"overlay VNI {vni}: {a[2]} in {a[0]} <-> {b[2]} in {b[0]}")


if __name__ == "__main__":
    main()
