#!/usr/bin/env python3
"""Step 2 exercise: run a command with ROOTFS as its root filesystem, using pivot_root.

Usage (as root):  labctl exercise 2 -- ROOTFS COMMAND [ARGS...]
   e.g.           sudo labctl exercise 2 -- /var/lib/labctl/rootfs/busybox-v1 sh -c 'ps; mount; ls /'
Judge it with:    sudo labctl check 2

This file only drives your runtime: the work is in lab/mycontainer/rootfs.py (its TODOs 1 to 5; 4 is
optional). The namespaces are your step 1 part. README.md in this folder explains each system call.
"""
import os
import sys

from mycontainer import namespaces, rootfs   # lab/mycontainer/: `labctl exercise` puts lab/ on the path


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    root, command = os.path.abspath(sys.argv[1]), sys.argv[2:]
    sys.exit(namespaces.spawn(command, setup=lambda: rootfs.enter_root(root)))


if __name__ == "__main__":
    main()
