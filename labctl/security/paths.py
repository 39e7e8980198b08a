"""Masked and read-only paths: the parts of /proc and /sys a container must not read or change.

A PID namespace gives the container its own /proc for processes, but many files under /proc and /sys
are not namespaced at all: they show or change the host's kernel. /proc/kcore is the host's memory,
/proc/sysrq-trigger reboots the host, /proc/sys/kernel/* sets host-wide knobs, /proc/keys lists the
host's keys. runc's default spec (`runc spec`) and Docker (moby's oci/defaults.go) hide them:

  masked     a directory gets an empty read-only tmpfs over it; a file gets /dev/null bound over it:
             reading shows nothing, writing goes nowhere (or fails with EROFS)
  read-only  bound onto itself, and the bind made read-only (mount_setattr(2)): readable, but an
             open(2) for writing fails with EROFS, even for root with every capability

Both are plain mounts in the container's own mount namespace, made by PID 1 after pivot_root (as
runc's init does) on the /proc and /sys it mounted. They stop root *without* CAP_SYS_ADMIN only: with
it, umount(2) takes them off again, which is why --privileged drops them altogether.
"""
from __future__ import annotations

import glob
import os

from labctl.kernel.syscalls import MOUNT_ATTR_RDONLY, MS_BIND, MS_REC, MS_RDONLY, mount, mount_setattr

#: Docker's list (runc's spec has the first ten; Docker adds /proc/interrupts, powercap and each CPU's
#: thermal_throttle after advisories GHSA-6fw5-f8r9-fgfm and GHSA-jq35-85cj-fj4p).
MASKED = ("/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
          "/proc/sched_debug", "/proc/scsi", "/proc/timer_list", "/proc/timer_stats",
          "/sys/devices/virtual/powercap", "/sys/firmware") + \
    tuple(sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/thermal_throttle")))

#: runc's and Docker's list.
READONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def mask(path: str) -> None:
    """An empty read-only tmpfs over a directory, /dev/null (the container's own) over a file."""
    if os.path.isdir(path):
        mount("tmpfs", path, "tmpfs", MS_RDONLY, "size=0")
    else:
        mount("/dev/null", path, None, MS_BIND)


def make_readonly(path: str) -> None:
    """mount(path, path, MS_BIND|MS_REC), then mount_setattr(MOUNT_ATTR_RDONLY) on the new bind and below."""
    mount(path, path, None, MS_BIND | MS_REC)
    mount_setattr(path, MOUNT_ATTR_RDONLY)


def apply(masked: list[str], readonly: list[str]) -> None:
    """Inside the container, after pivot_root: make `readonly` read-only, then mask `masked` (runc's
    order). A path the kernel does not have (no /proc/acpi without ACPI, say) is skipped."""
    for path in readonly:
        if os.path.lexists(path):
            make_readonly(path)
    for path in masked:
        if os.path.lexists(path):
            mask(path)
