#!/usr/bin/env python3
"""Step 3 exercise: run a command in a new cgroup that limits its memory and its number of processes.

Usage (as root):  python3 exercise.py NAME MEMORY_BYTES PIDS_MAX COMMAND [ARGS...]
   e.g.           python3 exercise.py box1 67108864 32 cat /proc/self/cgroup
Judge it with:    labctl check 3

Complete the lines marked TODO. README.md in this folder explains the files involved.
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

from labctl.kernel.cgroups.hierarchy import lab_parents, release_lab_parents  # noqa: E402  (given helpers)

# The file that holds each limit, by cgroup version (1 or 2) and controller.
LIMIT_FILES = {
    (1, "memory"): "memory.limit_in_bytes",
    (2, "memory"): "memory.max",
    (1, "pids"): "pids.max",
    (2, "pids"): "pids.max",
}
CONTROLLERS = ["memory", "pids"]


def write(path, value):
    """Write one value to a cgroup file (the kernel wants it in a single write)."""
    with open(path, "w") as f:
        f.write(str(value))


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    name, command = sys.argv[1], sys.argv[4:]
    limits = {"memory": int(sys.argv[2]), "pids": int(sys.argv[3])}

    # Given: {controller: (version, parent)}: parent is <the cgroup you are in>/labctl in the hierarchy
    # that holds the controller: /sys/fs/cgroup/memory/... on cgroup v1, /sys/fs/cgroup/... on v2.
    parents = lab_parents(CONTROLLERS)
    directories = {controller: parent / name for controller, (version, parent) in parents.items()}

    for controller, (version, parent) in parents.items():
        directory = directories[controller]
        # TODO 1: create the cgroup: make the directory `directory`.
        #         On v2, memory and pids are in the same tree: the directory may exist already (exist_ok).

        # TODO 2: set the limit: write limits[controller] into the file LIMIT_FILES[(version, controller)]
        #         inside `directory`.

    pid = os.fork()
    if pid == 0:
        # TODO 3: join the cgroups: write this process's PID (os.getpid()) into the file cgroup.procs
        #         of each directory, before exec, so that the command and all it forks are limited.

        os.execvp(command[0], command)

    _, status = os.waitpid(pid, 0)
    # TODO 4: remove the cgroups: rmdir each directory (possible once no process is left in it;
    #         on v2 both controllers share one directory: remove it once).

    release_lab_parents(CONTROLLERS)  # given: removes the labctl/ directories once they are empty
    code = os.waitstatus_to_exitcode(status)
    sys.exit(128 - code if code < 0 else code)  # killed by signal N: exit 128+N, as a shell does


if __name__ == "__main__":
    main()
