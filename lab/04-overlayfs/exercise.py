#!/usr/bin/env python3
"""Step 4 exercise: mount a stack of image layers with a writable upper layer, as a container runtime does.

Usage (as root):  python3 exercise.py MERGED UPPER WORK LAYER [LAYER...]
   LAYER...       the image's unpacked layer directories, BOTTOM FIRST (the order an image lists them)
   e.g.           python3 exercise.py /tmp/m /tmp/u /tmp/w /var/lib/labctl/images/layers/{aaa,bbb}
Judge it with:    labctl check 4

Complete the lines marked TODO. README.md in this folder explains the options.
"""
import ctypes
import os
import sys

libc = ctypes.CDLL("libc.so.6", use_errno=True)


def check(result, what):
    """libc returns -1 on failure and leaves the reason in errno: turn that into an OSError."""
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    merged, upper, work, layers = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]

    # TODO 1: build the overlay options: "lowerdir=A:B:C,upperdir=UPPER,workdir=WORK".
    #         OverlayFS wants the TOP layer first in lowerdir; `layers` is bottom first.
    options = ""

    # TODO 2: mount it.  int mount(const char *source, const char *target, const char *fstype,
    #                              unsigned long flags, const void *data);
    #         source "overlay", fstype "overlay", flags 0, data = the options; strings as bytes (.encode()).
    #         Hint: check(libc.mount(...), "mount")

    print(f"mounted overlay on {merged}: {options}")


if __name__ == "__main__":
    main()
