#!/usr/bin/env python3
"""Step 6 exercise: plug a network namespace into a bridge with a veth pair, an address and a route.

Usage (as root):  labctl exercise 6 -- NETNS BRIDGE HOST_IFNAME ADDRESS/PREFIX GATEWAY
   e.g.           sudo labctl exercise 6 -- lab-mine lab0 labmine 10.203.0.50/24 10.203.0.1
                  (the namespace and the bridge must exist: README.md shows how to make them;
                  `labctl check 6` makes both for you)
Judge it with:    sudo labctl check 6

This file only drives your runtime: the work is in lab/mycontainer/network.py (its TODOs 1 to 5).
README.md in this folder explains the netlink calls.
"""
import sys

from mycontainer import network   # lab/mycontainer/network.py: `labctl exercise` puts lab/ on the path


def main():
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    network.plug(*sys.argv[1:])


if __name__ == "__main__":
    main()
