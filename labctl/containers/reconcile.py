"""Reconciling: a container whose supervisor died is torn down by whoever notices first.

The supervisor (supervisor.py) tears a container down when its PID 1 exits. Kill the supervisor with
SIGKILL, or the `labctl run` that was starting the container, and nobody will: the record still holds
the network (an address, DNAT rules for -p), the cgroup and the overlay of a container that no longer
runs. Left so, its address goes to the next container while its published port still points there:
traffic for the dead container reaches a container that published nothing.

So `labctl ps`, `stop`, `kill`, the next bridge `run` (and the daemon of step 11) call reconcile: for
each container whose PID 1 and supervisor are both gone (each checked by PID *and* start time), record
the exit and run the supervisor's own teardown (teardown.py). A container still being created (its
creator, the `labctl run`, alive) and one whose supervisor lives (it will tear down itself) are left
alone. containerd does the same when it restarts and finds a shim gone.
"""
from __future__ import annotations

from labctl.containers import store
from labctl.containers.store import Container


def is_abandoned(container: Container) -> bool:
    """Ended with nobody left to tear it down: PID 1 and the supervisor gone, the creator too, and
    something (a network, a cgroup, a mounted root) still held."""
    if container.is_alive() or container.supervisor_alive():
        return False
    if container.state.get("status", "created") == "created" and container.status == "created":
        return False   # its `labctl run` is still creating it
    held = ("network", "cgroup")
    return any(container.state.get(key) for key in held) or container.state.get("status") != "exited"


def reconcile(container: Container) -> bool:
    """Tear down the container if it is abandoned (see is_abandoned). Returns whether it was."""
    try:
        fresh = store.load(container.id)   # the caller's copy may predate the supervisor's last word
    except store.NoSuchContainer:
        return False
    container.state = fresh.state
    if not is_abandoned(fresh):
        return False
    from labctl.containers.teardown import teardown
    if fresh.state.get("status") != "exited":
        store.record_exited(fresh)
    teardown(fresh)
    container.state = fresh.state
    return True


def reconcile_all() -> list[Container]:
    """Reconcile every container; returns them all (as store.all_containers, after the teardowns)."""
    containers = store.all_containers()
    for container in containers:
        try:
            reconcile(container)
        except store.NoSuchContainer:   # removed meanwhile by `rm` or its supervisor
            pass
    return [c for c in containers if c.dir.exists()]
