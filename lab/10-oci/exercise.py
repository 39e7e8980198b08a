#!/usr/bin/env python3
"""Step 10 exercise: an OCI runtime's two phases. `create` makes PID 1 and leaves it waiting; `start`
lets it exec the command. Each is its own process, as containerd's shim runs runc's.

Usage (as root):  labctl exercise 10 -- create STATE_DIR COMMAND [ARGS...]     prints PID 1's PID
                  labctl exercise 10 -- start STATE_DIR
                  labctl exercise 10 -- state STATE_DIR                        created | running | stopped
   e.g.           mkdir /tmp/c1
                  sudo labctl exercise 10 -- create /tmp/c1 sh -c 'echo started > /tmp/c1/out; sleep 60'
                  sudo labctl exercise 10 -- state /tmp/c1; cat /proc/$(cat /tmp/c1/pid)/syscall
                  sudo labctl exercise 10 -- start /tmp/c1; cat /tmp/c1/out
Judge it with:    sudo labctl check 10

This file only drives your runtime: the work is in lab/mycontainer/oci.py (its TODOs 1 to 3).
README.md in this folder explains why a FIFO.
"""
import sys

from mycontainer import oci   # lab/mycontainer/oci.py: `labctl exercise` puts lab/ on the path


def main():
    args = sys.argv[1:]
    if len(args) >= 3 and args[0] == "create":
        print(oci.create(args[1], args[2:]))
    elif len(args) == 2 and args[0] == "start":
        sys.exit(0 if oci.start(args[1]) else 1)
    elif len(args) == 2 and args[0] == "state":
        print(oci.state(args[1]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
