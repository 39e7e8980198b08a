"""The kernel primitives a container is made of (what runc's libcontainer wraps): steps 1 to 4.

One module per primitive, each readable alone:
  syscalls.py    ctypes wrappers: unshare, setns, mount, umount2, pivot_root, clone3, sethostname,
                 and step 9's prctl, capset and the seccomp filter
  namespaces.py  step 1: unshare, fork for PID 1, setns to join
  handshake.py   the messages between the parent and the child it forks into new namespaces
                 (PID, READY, GO, ERROR): namespaces.py and the runtime speak it
  signals.py     passing on SIGINT, SIGTERM, SIGHUP and SIGQUIT to a process in a PID namespace
  rootfs.py      step 2: pivot_root, /proc, a minimal /dev, read-only /sys
  cgroups/       step 3: one Cgroup over v1, v2 or both; limits in Docker's terms
  overlay.py     step 4: OverlayFS roots over the image store's layers
  bpf.py         bpf(2) without a compiler: load raw instructions, attach them to a cgroup (step 9's
                 device filter)
Step 9's security profile (capabilities, seccomp, masked paths, devices, user namespaces) lives beside
this folder, in labctl/security/, built on the prctl/capset/seccomp wrappers of syscalls.py and bpf.py.
"""
