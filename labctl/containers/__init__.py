"""Step 7: containers, `labctl run IMAGE` and friends, assembled from the pieces of steps 1 to 6.
Docker's counterpart: the daemon's container management and containerd, with its shim (supervisor.py);
the process itself is made by the runtime below (labctl/runtime: runc's part).

One concern per module:
  spec.py        what to run: the image config merged with the command line, as Docker merges them
  store.py       the containers' records in the state directory (atomic writes, locks, liveness)
  images.py      an image reference -> its config and the lower directories of its root filesystem
  volumes.py     named volumes (`labctl volume create|ls|rm`) and bind/tmpfs mount parsing
  resources.py   the container's cgroup: created with its limits, read for stats, removed
  networking.py  the container's network: none, host, or bridge (attached by PID 1's PID)
  lifecycle.py   build the spec, create, start, wait, stop, kill, remove: the life of a container
  supervisor.py  the small process that outlives labctl, waits for PID 1 and tears down (the shim)
  teardown.py    how a container ends: the exit recorded, the cgroup, network and overlay removed
  reconcile.py   the teardown of a container whose supervisor died, by whoever notices (ps, stop, run)
  enter.py       `labctl exec`: one more process in a running container's namespaces and cgroup
  terminal.py    `-it`, labctl's half: raw mode, the copying, the window size, restored on exit
  stats.py       `labctl stats`: each container's cgroup counters, and the step 7 measurement
  logs.py        `labctl logs [-f]`: a detached container's output, read back from its log file
  ociconfig.py   a container's config.json (the OCI runtime spec): what every runtime is handed
  bundle.py      `labctl bundle`: an OCI bundle (rootfs + config.json) from an image and run's flags

Only the standard library is imported on the `labctl run` path, so a container starts fast.
"""

