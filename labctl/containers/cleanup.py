"""What `labctl cleanup` leaves alone, and what it sweeps, among the containers' leftovers.

The journal (labctl/state.py) holds a container's records for its whole life: the container itself, its
overlay's directory and mount, its cgroup, its address, veth and port rules. Replaying all of them
would kill a healthy detached container along with the leftovers of a crashed step. So cleanup first
asks which containers are alive, and keeps their records, unless `--all` is given (Docker's
counterpart: `docker container prune` removes stopped containers only; `docker rm -f $(docker ps -aq)`
removes all):

  alive  its supervisor still runs (same PID and start time), or the `labctl run` creating it does
  dead   everything else: the supervisor was killed, or the machine rebooted; cleanup removes it all
"""
from __future__ import annotations

import contextlib
import os

from labctl import state
from labctl.containers import store
from labctl.containers.store import Container


def is_alive(container: Container) -> bool:
    """A supervisor that still runs, or a `labctl run` still creating the container (status "created").
    A killed supervisor may linger as a zombie until its parent reaps it (the parent is whatever reaps
    orphans: not always a prompt init): that one is dead too."""
    if container.supervisor_alive():
        return True
    return container.status == "created"


def live_containers() -> list[Container]:
    return [c for c in store.all_containers() if is_alive(c)]


def records_of(containers: list[Container]) -> set[str]:
    """The paths of the journal records that belong to these containers: those their record names (the
    container's own, its cgroup's, its network's), those that name its ID (its overlay), and while any
    of them is on a bridge, the bridge's and the nftables table's (shared: they go with their last user)."""
    records = state.records()
    own: set[str] = set()
    for container in containers:
        network = container.state.get("network") or {}
        own |= {container.state.get("journal"), (container.state.get("cgroup") or {}).get("journal")}
        own |= set(network.get("records", []))
        markers = (container.id, (container.state.get("cgroup") or {}).get("name") or f"labctl-{container.short_id}")
        # (the overlay's paths, the cgroup's name)
        own |= {str(rec.path) for rec in records
                if any(marker in str(value) for value in rec.data.values() for marker in markers)}
        if network.get("network"):
            own |= {str(rec.path) for rec in records if rec.kind in ("bridge", "nftables")}
    own.discard(None)
    return own


def sweep_old_lock_files() -> list[str]:
    """Remove <state>/locks/container-<id>.lock files: labctl once kept each container's lock there and
    never deleted it (one file per container ever run); the lock is in the container's directory now
    (store.locked), so no process opens these any more."""
    removed = []
    for path in state.subdir("locks").glob("container-*.lock"):
        if path.name != "container-names.lock":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed.append(str(path))
    return removed
