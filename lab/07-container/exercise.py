#!/usr/bin/env python3
"""Step 7 exercise: a whole container, made of your own runtime's parts (steps 1 to 4).

Usage (as root):  labctl exercise 7 -- NAME MEMORY COMMAND [ARGS...]
   e.g.           sudo labctl exercise 7 -- box1 48m sh -c 'hostname; cat /etc/os-release; cat /proc/self/cgroup'
Judge it with:    sudo labctl check 7

This file only drives your runtime: the work is in lab/mycontainer/container.py (its TODOs 1 to 4),
which calls your parts of steps 1 to 4. README.md in this folder says which part does what.
The image is the lab's busybox, imported into labctl's image store by `labctl prepare`.
"""
import sys

from mycontainer import container   # lab/mycontainer/: `labctl exercise` puts lab/ on the path

IMAGE = "localhost/busybox:latest"
UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def image_layers(reference):
    """Given: the directories where labctl's image store unpacked the image's layers, bottom first
    (`labctl prepare` imported it; step 5's registry part fetches layers, `labctl pull` unpacks them)."""
    from labctl.images.store import ImageStore
    return [str(p) for p in ImageStore().layer_dirs(reference)]


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    name, memory, command = sys.argv[1], sys.argv[2], sys.argv[3:]
    memory_bytes = int(memory[:-1]) * UNITS[memory[-1].lower()] if memory[-1:].isalpha() else int(memory)
    status = container.run(name, memory_bytes, command, image_layers(IMAGE))
    if status is None:
        sys.exit("exercise: container.run returned no exit status: complete lab/mycontainer/container.py")
    sys.exit(status)


if __name__ == "__main__":
    main()
