"""Part 4 of mycontainer (step 4): image layers stacked under a writable layer, with OverlayFS.

The reference version (`labctl lab take 4` copies it into lab/mycontainer).
"""
import os

from .libc import mount


def options(upper, work, layers):
    """The overlay mount's options for `layers`, BOTTOM FIRST (the order an image lists them)."""
    return f"lowerdir={':'.join(str(p) for p in reversed(layers))},upperdir={upper},workdir={work}"


def mount_overlay(merged, upper, work, layers):
    """Mount at `merged` the layers (bottom first) under the writable directory `upper`."""
    mount("overlay", merged, "overlay", 0, options(upper, work, layers))


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
