"""The runtime: a container's configuration in, a process in new namespaces and its cgroup, on its own
root, out. Docker's counterpart is the OCI runtime, runc (which containerd's shim runs); step 10 grows
this folder into one that takes an OCI bundle (a root filesystem and its config.json), as runc does.

It knows nothing of images, names, records or networks: the containers layer above (labctl.containers)
prepares all that and writes a config.json, which oci.py reads into a Config; below it are the kernel
primitives (labctl.kernel). One runtime: `labctl run`, the daemon and `labctl-runtime` share it all.

  config.py   what to run: root, command, environment, user, hostname, namespaces, mounts, cgroup
  create.py   `create` then `start`: fork the supervisor, unshare, fork PID 1 into its cgroup, READY, GO
  ociinit.py  what PID 1 does to itself before execve: namespaces, mounts, pivot_root, the user (runc's
              init), and the wait on exec.fifo between `labctl-runtime create` and `start`
  confine.py  the security profile (step 9) in runc's order: masked paths, no_new_privs, seccomp, the
              capability sets around the change of user; the seccomp filter compiled before the fork
  cgroup.py   processes born in the container's cgroup, without the wait a move into it costs
  user.py     the user, looked up in the image's own /etc/passwd and /etc/group
  stdio.py    the process's stdin/stdout/stderr, or a terminal opened inside (--console-socket)

The OCI runtime (step 10: `labctl-runtime`, runc's command line, driven by containerd or runtime-tools):
  oci.py          config.json <-> Config: to_oci (what `labctl run` does), from_oci (any bundle's)
  ocicheck.py     a config.json checked against the spec, one line naming the bad field
  ocicli.py       the command line: create, start, state, kill, delete, run, exec, ps, list, spec
  ocicommands.py  the five operations, each its own process, sharing only the state directory
  ocistate.py     <root>/<id>/state.json and exec.fifo; the status read from the kernel
  ocicleanup.py   what a crashed runtime leaves (journaled), told from a live container, for `labctl cleanup`
  ocimounts.py    the bundle's mounts list carried out (runc's rootfs_linux.go), /dev's nodes
  ocicgroup.py    linux.cgroupsPath and linux.resources: the cgroup, nested under the lab's node
  ociexec.py      `exec`: one more process inside a running container
  hooks.py        prestart ... poststop, each with the state JSON on its stdin
  peers.py        runc, crun and labctl-runtime as command lines (crun's hybrid-host workaround)

Beyond labctl.kernel and labctl.state it imports the standard library only, so `labctl run` starts fast.
"""
