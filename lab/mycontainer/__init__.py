"""mycontainer: your own container runtime, grown one part per step of the lab.

Each step adds one module (a "part") here, and its exercise (lab/NN-topic/exercise.py) is a thin driver
that runs that part with the step's command-line contract, so `labctl check N` can judge it:

    step 1  namespaces.py   new namespaces, a hostname, PID 1            (unshare, sethostname)
    step 2  rootfs.py       the image as /, its own /proc, /dev, /sys     (mount, pivot_root, umount2)
    step 3  cgroups.py      memory and process limits                    (the cgroup filesystem)
    step 4  overlay.py      image layers under a writable layer          (mount -t overlay)
    step 5  registry.py     a manifest and a layer from a registry        (HTTP, sha256)
    step 6  network.py      a veth pair, an address, a default route      (netlink)
    step 7  container.py    `run`: parts 1, 2, 3 and 4 together, nothing else
    step 9  security.py     capabilities, no_new_privs, a seccomp filter   (prctl, capset, seccomp)

libc.py is given: the C library through ctypes, the flags, thin wrappers that turn -1 into an OSError.

Skipped a step? `labctl lab take N` puts the reference part of step N here (yours is kept as
PART.py.mine); `labctl lab reset N` puts back the version with the TODOs. `labctl lab status` shows
which parts are yours. Run a step's driver with `sudo labctl exercise N -- ARGS`.
"""
