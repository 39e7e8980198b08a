#!/usr/bin/env python3
"""Step 7 exercise: assemble a container from the library's pieces (steps 1 to 4).

Usage (as root):  python3 exercise.py NAME MEMORY COMMAND [ARGS...]
   e.g.           python3 exercise.py box1 48m sh -c 'hostname; cat /etc/os-release; cat /proc/self/cgroup'
Judge it with:    labctl check 7

Complete the lines marked TODO. README.md in this folder says which function does what.
The image is the lab's busybox, imported into the store by `labctl prepare` (localhost/busybox:latest).
"""
import os
import sys
from pathlib import Path

# labctl and the packages it uses (pyroute2, psutil) are installed in the lab's virtual environment,
# .venv beside lab/: the Python `labctl check` runs exercises with. Started by Debian's python3
# (`sudo python3 exercise.py ...`), which has neither? Then start again in the venv's Python.
LAB_PYTHON = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python"
if sys.prefix == sys.base_prefix and LAB_PYTHON.exists() and sys.executable != str(LAB_PYTHON):
    os.execv(LAB_PYTHON, [str(LAB_PYTHON), *sys.argv])

from labctl.kernel import cgroups, namespaces, overlay, rootfs  # noqa: E402
from labctl.images.store import ImageStore  # noqa: E402

IMAGE = "localhost/busybox:latest"


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    name, memory, command = sys.argv[1], sys.argv[2], sys.argv[3:]
    cgroup = None
    root = None
    kinds = ("uts", "pid", "ipc", "mnt")
    setup = None

    # TODO 1: a cgroup named NAME whose memory limit is MEMORY (Docker's -m):
    #         cgroup = cgroups.Cgroup.create(name, cgroups.parse_limits(memory=memory))

    # TODO 2: the container's root filesystem: the image's layers under a writable layer (OverlayFS):
    #         root = overlay.ContainerRoot.create(ImageStore(), IMAGE, name)     (root.merged is the path)

    # TODO 3: a network namespace too, and a setup that pivots into the overlay (it runs as PID 1):
    #         kinds = kinds + ("net",);  setup = lambda: rootfs.setup_container_root(root.merged, readonly=False)

    try:
        proc = namespaces.spawn(command, namespaces=kinds, hostname=name, setup=setup, start=False)

        # TODO 4: put PID 1 into the cgroup before it runs the command:  cgroup.add(proc.pid)

        proc.start()
        status = proc.wait()
    finally:
        if cgroup:
            cgroup.remove()
        if root:
            root.remove()
    sys.exit(128 - status if status < 0 else status)


if __name__ == "__main__":
    main()
