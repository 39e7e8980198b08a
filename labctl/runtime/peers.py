"""The other OCI runtimes on the machine (runc, crun) and labctl's own, as command lines that take
runc's arguments: what `labctl run --runtime`, step 10's demo, its benchmark and its tests call.

crun on a hybrid cgroup host (v1 controllers, an empty cgroup2 at /sys/fs/cgroup/unified) takes the
cgroup2 mount for the unified hierarchy and fails; it is run in a mount namespace of its own where that
mount is lazily unmounted (`unshare -m`), which changes nothing for the host.
"""
from __future__ import annotations

import os
import shutil
import sys

from labctl.errors import LabError

NAMES = ("labctl", "runc", "crun")
CRUN_ON_HYBRID = 'umount -l /sys/fs/cgroup/unified 2>/dev/null; exec crun "$@"'


def command(name: str) -> list[str]:
    """The argv prefix that runs runtime `name` (then: --root ..., create ..., as runc takes them)."""
    if name in ("labctl", "labctl-oci", "labctl-runtime"):
        return [sys.executable, "-m", "labctl.runtime.ocicli"]
    path = shutil.which(name)
    if not path:
        raise LabError(f"the OCI runtime {name} is not installed", f"`apt-get install {name}`")
    if name == "crun" and os.path.ismount("/sys/fs/cgroup/unified"):
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", CRUN_ON_HYBRID, "crun"]
    return [path]


def available() -> list[str]:
    return [n for n in NAMES if n == "labctl" or shutil.which(n)]
