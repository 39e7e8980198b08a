"""Part 3 of mycontainer (step 3): a cgroup that limits memory and the number of processes.

The reference version (`labctl lab take 3` copies it into lab/mycontainer).
"""
import os
import signal
import time

# Given: where the lab's cgroups go, on cgroup v1 and v2 alike (labctl finds the hierarchies in
# /proc/self/mountinfo and /proc/self/cgroup, and on v2 enables the controllers for the children).
from labctl.kernel.cgroups.hierarchy import lab_parents, release_lab_parents

#: The file that holds each limit, by cgroup version (1 or 2) and controller.
LIMIT_FILES = {
    (1, "memory"): "memory.limit_in_bytes",
    (2, "memory"): "memory.max",
    (1, "pids"): "pids.max",
    (2, "pids"): "pids.max",
}


def create(name, limits):
    """Create the cgroup `name` wherever a controller of `limits` ({"memory": bytes, "pids": n}) lives,
    with those limits set; returns {controller: its cgroup directory}."""
    directories = {}
    for controller, (version, parent) in lab_parents(list(limits)).items():
        directory = parent / name
        os.makedirs(directory, exist_ok=True)     # on v2 the controllers share one directory
        with open(directory / LIMIT_FILES[(version, controller)], "w") as f:
            f.write(str(limits[controller]))      # one write: the kernel parses each write whole
        directories[controller] = directory
    return directories


def join(directories):
    """Move the calling process into each cgroup of `directories`: what it forks is born there."""
    for directory in set(directories.values()):
        with open(directory / "cgroup.procs", "w") as f:
            f.write(str(os.getpid()))


def remove(directories):
    """Remove the cgroups: first end what the command left running in them, then the directories."""
    for directory in set(directories.values()):
        if not directory.exists():
            continue
        procs = directory / "cgroup.procs"
        while procs.read_text().split():   # the command's background children, still inside
            for pid in procs.read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
        os.rmdir(directory)


# ---------------------------------------------------------------------------------------------
# Given: the same in the skeleton and the reference.

def release(directories):
    """Remove the lab's own parent directories (<your cgroup>/labctl) once no lab cgroup is left in them."""
    release_lab_parents(list(directories))
