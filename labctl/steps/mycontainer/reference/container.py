"""Part 7 of mycontainer (step 7): `run`, a whole container made of your parts 1 to 4 and nothing else.

The reference version (`labctl lab take 7` copies it into lab/mycontainer).

The order matters, and is runc's: the cgroup exists before the container does; the child joins it
before it does anything else (all it forks is born inside); it mounts the overlay inside its own
mount namespace (so the host never sees that mount, and it vanishes with the namespace), then
pivots into it; only then does it exec the command, as PID 1.
"""
import os
import shutil
import tempfile

from . import cgroups, namespaces, overlay, rootfs
from .libc import CLONE_NEWNET


def run(name, memory_bytes, command, layers):
    """Run `command` as PID 1 of a container named `name`: the image `layers` (bottom first) under a
    writable layer as its root, new UTS, PID, IPC, mount and network namespaces, its hostname `name`,
    a cgroup that limits its memory to `memory_bytes`. Returns its exit status (128+N for signal N)."""
    work = tempfile.mkdtemp(prefix=f"mycontainer-{name}-")
    merged, upper, workdir = (os.path.join(work, d) for d in ("merged", "upper", "work"))
    for d in (merged, upper, workdir):
        os.mkdir(d)
    directories = {}
    try:
        directories = cgroups.create(name, {"memory": memory_bytes})

        def setup():                      # in the child: PID 1 of the new namespaces, before exec
            cgroups.join(directories)
            rootfs.make_mounts_private()
            overlay.mount_overlay(merged, upper, workdir, layers)
            rootfs.enter_root(merged)

        return namespaces.spawn(command, hostname=name, flags=namespaces.NAMESPACES | CLONE_NEWNET, setup=setup)
    finally:
        if directories:
            cgroups.remove(directories)
            cgroups.release(directories)
        shutil.rmtree(work, ignore_errors=True)
