#!/usr/bin/env python3
"""Step 4 exercise: mount a stack of image layers with a writable upper layer, as a container runtime does.

Usage (as root):  labctl exercise 4 -- MERGED UPPER WORK LAYER [LAYER...]
   LAYER...       the image's unpacked layer directories, BOTTOM FIRST (the order an image lists them)
   e.g.           sudo labctl exercise 4 -- /tmp/m /tmp/u /tmp/w /var/lib/labctl/images/layers/{aaa,bbb}
Judge it with:    sudo labctl check 4

This file only drives your runtime: the work is in lab/mycontainer/overlay.py (its TODOs 1 and 2).
It prints what the kernel's mount table shows, and exits 1 when no overlay is there.
README.md in this folder explains the options.
"""
import sys

from mycontainer import overlay   # lab/mycontainer/overlay.py: `labctl exercise` puts lab/ on the path


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    merged, upper, work, layers = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    overlay.mount_overlay(merged, upper, work, layers)
    mounted = overlay.mounted_options(merged)    # read back from /proc/self/mountinfo
    if mounted is None:
        sys.exit(f"no overlay is mounted on {merged} (/proc/self/mountinfo): complete "
                 "lab/mycontainer/overlay.py")
    print(f"mounted overlay on {merged}: {mounted}")


if __name__ == "__main__":
    main()
