"""Step 7: a whole container, `labctl run IMAGE`, assembled from the pieces of steps 1 to 6.

One concern per module:
  spec.py        what to run: the image config merged with the command line, as Docker merges them
  store.py       the containers' records in the state directory (atomic writes, locks, liveness)
  images.py      an image reference -> its config and the lower directories of its root filesystem
  volumes.py     named volumes (`labctl volume create|ls|rm`) and bind/tmpfs mount parsing
  inside.py      what runs inside the new namespaces before exec: root, mounts, cgroup ns, user, env
  runtime.py     create, start, wait, stop, exec, remove: the life of a container
  supervisor.py  the small process that outlives labctl, waits for PID 1 and tears down
  terminal.py    `-it`: a pty pair, raw mode, window size, restored on exit
  logs.py        `labctl logs [-f]`: a detached container's output, read back from its log file

Only the standard library is imported on the `labctl run` path, so a container starts fast.
"""
