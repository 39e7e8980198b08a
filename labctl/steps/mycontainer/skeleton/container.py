"""Part 7 of mycontainer (step 7): `run`, a whole container made of your parts 1 to 4 and nothing else.

Complete the TODOs with calls to your own parts (namespaces.py, rootfs.py, cgroups.py, overlay.py);
the rest is given. README.md in lab/07-container says what each part brings.

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
        # TODO 1: afterwards a cgroup named `name` exists whose memory limit is memory_bytes (what
        #         `labctl check 7` reads in the memory controller's limit file), and `directories`
        #         says where it is, so that the `finally` below removes it. Your step 3 part does this.

        def setup():                      # in the child: PID 1 of the new namespaces, before exec
            # TODO 2: afterwards this process is in the cgroup (/proc/self/cgroup names it), before it
            #         does anything else: what it forks from now on is born inside. Step 3's part.

            # TODO 3: afterwards / is the overlay of `layers` with upper and workdir: mounted here, in
            #         the container's own mount namespace, after mount events stopped propagating to
            #         the host (step 2's first function, then step 4's part), then entered with
            #         pivot_root and its /proc, /dev, /sys (step 2's part, on `merged`).
            pass

        # TODO 4: afterwards `command` has run as PID 1 of new UTS, PID, IPC, mount AND network
        #         namespaces (step 1's set, plus CLONE_NEWNET from libc.py), with hostname `name`,
        #         `setup` run in the child; return its exit status. Your step 1 part's spawn does it.
        return None
    finally:
        if directories:
            cgroups.remove(directories)
            cgroups.release(directories)
        shutil.rmtree(work, ignore_errors=True)
