"""Part 4 of mycontainer (step 4): image layers stacked under a writable layer, with OverlayFS.

Complete the TODOs; the rest is given. README.md in lab/04-overlayfs explains the options.
"""
import os

from .libc import mount


def options(upper, work, layers):
    """The overlay mount's options for `layers`, BOTTOM FIRST (the order an image lists them)."""
    # TODO 1: return the option string the overlay filesystem takes: the read-only layers, the
    #         writable upper directory and its work directory. Their names, their separators, and in
    #         which order lowerdir wants the layers (which one is on top?): the kernel's
    #         Documentation/filesystems/overlayfs.rst, "Multiple lower layers" and "Upper and Lower".
    return ""


def mount_overlay(merged, upper, work, layers):
    """Mount at `merged` the layers (bottom first) under the writable directory `upper`."""
    # TODO 2: afterwards mounted_options (below) finds it: /proc/self/mountinfo has an overlay on
    #         `merged` with your options. mount(2) with the filesystem type "overlay", no flags, and
    #         the options as its data argument; libc.py's mount wrapper raises OSError on failure, and
    #         `dmesg` then says why (overlayfs logs the option it did not like).
    pass


# ---------------------------------------------------------------------------------------------
# Given: the same in the skeleton and the reference.

def mounted_options(merged):
    """The options of the overlay mounted at `merged`, as the kernel shows them in /proc/self/mountinfo
    (man 5 proc_pid_mountinfo: field 5 is the mount point, then after " - " the type, source and
    options), or None if no overlay is mounted there."""
    target = os.path.realpath(merged)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            point = left.split()[4].replace("\\040", " ")
            fstype, _, opts = right.split()[:3]
            if point == target:
                found = opts if fstype == "overlay" else None   # the last mount on a point is the visible one
    return found
