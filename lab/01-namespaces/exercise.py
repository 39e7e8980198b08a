#!/usr/bin/env python3
"""Step 1 exercise: start a command in new UTS, PID, IPC and mount namespaces, with its own hostname.

Usage (as root):  labctl exercise 1 -- HOSTNAME COMMAND [ARGS...]
   e.g.           sudo labctl exercise 1 -- box1 sh -c 'hostname; echo my pid is $$'
Judge it with:    sudo labctl check 1

This file only drives your runtime: the work is in lab/mycontainer/namespaces.py (its TODOs 1 and 2).
README.md in this folder explains the system calls.
"""
import sys

from mycontainer import namespaces   # lab/mycontainer/namespaces.py: `labctl exercise` puts lab/ on the path


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    hostname, command = sys.argv[1], sys.argv[2:]
    sys.exit(namespaces.spawn(command, hostname=hostname))


if __name__ == "__main__":
    main()
