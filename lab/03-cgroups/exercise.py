#!/usr/bin/env python3
"""Step 3 exercise: run a command in a new cgroup that limits its memory and its number of processes.

Usage (as root):  labctl exercise 3 -- NAME MEMORY_BYTES PIDS_MAX COMMAND [ARGS...]
   e.g.           sudo labctl exercise 3 -- box1 67108864 32 cat /proc/self/cgroup
Judge it with:    sudo labctl check 3

This file only drives your runtime: the work is in lab/mycontainer/cgroups.py (its TODOs 1 to 4).
The fork is your step 1 part's spawn(), without new namespaces. README.md in this folder explains the files.
"""
import sys

from mycontainer import cgroups, namespaces   # lab/mycontainer/: `labctl exercise` puts lab/ on the path


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    name, command = sys.argv[1], sys.argv[4:]
    limits = {"memory": int(sys.argv[2]), "pids": int(sys.argv[3])}
    directories = cgroups.create(name, limits)
    try:
        # the child joins the cgroups before exec: the command and all it forks are limited
        status = namespaces.spawn(command, flags=0, setup=lambda: cgroups.join(directories))
    finally:
        cgroups.remove(directories)
        cgroups.release(directories)
    sys.exit(status)


if __name__ == "__main__":
    main()
