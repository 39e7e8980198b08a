"""Part 3 of mycontainer (step 3): a cgroup that limits memory and the number of processes.

Complete the TODOs; the rest is given. README.md in lab/03-cgroups explains the files.
"""
import os

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
        # TODO 1: afterwards `directory` exists: a cgroup is a directory of a cgroup filesystem, and the
        #         kernel fills it with control files when it is created (man 7 cgroups, "Creating
        #         cgroups and moving processes"). On v2 memory and pids share one tree: the second
        #         controller finds the directory already there.

        # TODO 2: afterwards the file LIMIT_FILES[(version, controller)] in `directory` holds
        #         limits[controller] (`cat` it). The kernel parses each write(2) as a whole: write the
        #         number in one go. Documentation/admin-guide/cgroup-v2.rst (memory.max, pids.max), and
        #         cgroup-v1/memory.rst for memory.limit_in_bytes.

        directories[controller] = directory
    return directories


def join(directories):
    """Move the calling process into each cgroup of `directories`: what it forks is born there."""
    # TODO 3: afterwards /proc/self/cgroup names each of these cgroups (one line per v1 hierarchy, the
    #         `0::` line on v2). A process moves itself by writing its PID into the cgroup's
    #         cgroup.procs (man 7 cgroups); once per directory: on v2 the controllers share one.
    pass


def remove(directories):
    """Remove the cgroups: first end what the command left running in them, then the directories."""
    # TODO 4: afterwards the directories are gone. rmdir(2) removes a cgroup once no process is left in
    #         it (EBUSY otherwise); a cgroup directory cannot be emptied file by file first (man 7
    #         cgroups). The command may have left background children behind (`sh -c 'sleep 9 & exit'`):
    #         cgroup.procs lists what is still inside; end them (kill(2)) and wait until it reads empty.
    #         Once per directory.
    pass


# ---------------------------------------------------------------------------------------------
# Given: the same in the skeleton and the reference.

def release(directories):
    """Remove the lab's own parent directories (<your cgroup>/labctl) once no lab cgroup is left in them."""
    release_lab_parents(list(directories))
