"""The security profile of a container (step 9): what a root process inside may still do to the host;
Docker's default profile (capabilities, seccomp, masked paths), as runc applies it.

Docker's counterpart is split between the daemon, which decides the default profile (moby's
`oci/caps` and `profiles/seccomp/default.json`), and runc, which applies it (libcontainer's
capabilities, seccomp and devices packages) just before the container's command is exec'd.

  profile.py       the profile as data: the flags of `labctl run` (--cap-add, --cap-drop, --privileged,
                   --security-opt, --read-only, --userns) in, one SecurityProfile out, stored in the
                   container's record and shown by `labctl inspect`
  capabilities.py  the 14 capabilities Docker keeps, and how PID 1 drops the rest (bounding, permitted,
                   effective, inheritable, ambient sets)
  seccomp.py       Docker's default allowlist and Docker-format JSON profiles, turned into a filter by
                   libseccomp and loaded by PID 1 (denied calls fail with EPERM)
  paths.py         /proc and /sys files masked or made read-only, as runc's default spec lists them
  devices.py       the device allowlist: the v1 devices controller, or on cgroup v2 a
                   BPF_PROG_TYPE_CGROUP_DEVICE program attached to the container's cgroup
  userns.py        --userns remap: root inside mapped to an unprivileged range of the host (/etc/subuid),
                   the image's layers shown through idmapped mounts

It sits beside labctl.kernel: it imports the kernel's primitives and the standard library (libseccomp's
Python binding only to compile a filter or check a profile file), never the layers above. *When* each
piece is applied (the order is forced: each needs a privilege the next takes away) is the runtime's
part: labctl/runtime/confine.py, called by PID 1 (runtime/ociinit.py) and by `labctl exec`.
"""
