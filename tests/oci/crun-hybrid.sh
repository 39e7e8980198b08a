#!/bin/sh
# crun with runc's command line, on a hybrid cgroup host: crun takes an empty cgroup2 mounted at
# /sys/fs/cgroup/unified for the unified hierarchy and fails, so it runs in a mount namespace of its
# own where that mount is lazily unmounted (the host keeps it). labctl/runtime/peers.py does the same.
#   RUNTIME=tests/oci/crun-hybrid.sh ./validation/default/default.t
if mountpoint -q /sys/fs/cgroup/unified 2>/dev/null; then
  exec unshare -m --propagation private sh -c 'umount -l /sys/fs/cgroup/unified 2>/dev/null; exec crun "$@"' crun "$@"
fi
exec crun "$@"
