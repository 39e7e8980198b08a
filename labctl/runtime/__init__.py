"""The runtime: a container's configuration in, a process in new namespaces and its cgroup, on its own
root, out. Docker's counterpart is the OCI runtime, runc (which containerd's shim runs); step 10 grows
this folder into one that takes an OCI bundle (a root filesystem and its config.json), as runc does.

It knows nothing of images, names, records or networks: the containers layer above (labctl.containers)
prepares all that and hands over a Config; below it are the kernel primitives (labctl.kernel).

  config.py   what to run: root, command, environment, user, hostname, namespaces, mounts, cgroup
  create.py   `create` then `start`: fork the supervisor, unshare, fork PID 1 into its cgroup, READY, GO
  pid1.py     what PID 1 does to itself before execve: mounts, pivot_root, the user (runc's init)
  confine.py  the security profile (step 9) in runc's order: masked paths, no_new_privs, seccomp, the
              capability sets around the change of user; the seccomp filter compiled before the fork
  cgroup.py   processes born in the container's cgroup, without the wait a move into it costs
  user.py     the user, looked up in the image's own /etc/passwd and /etc/group
  stdio.py    the process's stdin/stdout/stderr, or a terminal opened inside (--console-socket)

Beyond labctl.kernel and labctl.state it imports the standard library only, so `labctl run` starts fast.
"""
