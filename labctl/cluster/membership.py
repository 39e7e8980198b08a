"""In a host's daemon: its entry in the cluster store, kept alive by a lease.

    lease = grant(TTL)                                   etcd counts down TTL seconds
    put /labctl/hosts/host1 {"address", "socket"} lease  the key lives as long as the lease
    every TTL/3 s: keepalive(lease)                      back to TTL; answered 0: it expired (etcd
                                                         was away too long): grant and put again
    on_lease(lease)                                      after each grant: the host's containers'
                                                         endpoint keys put again on it (endpoint.py)

A daemon killed with SIGKILL refreshes nothing: etcd deletes the key TTL seconds later, and whoever
watches /labctl/hosts/ sees the host leave. A daemon that stops cleanly revokes its lease: the key
goes at once. The daemon starts this when $LABCTL_CLUSTER_HOST names it a cluster host (hosts.py
sets it, with $LABCTL_CLUSTER_ADDRESS, $LABCTL_CLUSTER_STORE and $LABCTL_CLUSTER_TTL).
"""
from __future__ import annotations

import json
import logging
import os
import threading

from labctl.cluster import DEFAULT_TTL, HOSTS_PREFIX, STORE_URL
from labctl.cluster.store import Store
from labctl.errors import LabError

log = logging.getLogger("labctl.daemon")


class Membership:
    """A thread that keeps /labctl/hosts/<name> in the store for as long as this process lives."""

    def __init__(self, name: str, address: str, socket_path: str, url: str = STORE_URL, ttl: int = DEFAULT_TTL,
                 on_lease=None):
        self.key = HOSTS_PREFIX + name
        self.value = json.dumps({"address": address, "socket": socket_path})
        self.store = Store(url, netns=None)   # the daemon is in its host's namespace already
        self.ttl = ttl
        self.lease = 0
        self.on_lease = on_lease   # called with each new lease: the keys that must live on it put again
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cluster membership", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        pending = False   # a new lease whose on_lease has not run to the end yet
        while not self._stop.is_set():
            try:
                if not self.lease or self.store.keepalive(self.lease) == 0:
                    self.lease = self.store.grant(self.ttl)
                    self.store.put(self.key, self.value, self.lease)
                    log.info("registered %s in the cluster store, lease %x, TTL %d s", self.key, self.lease, self.ttl)
                    pending = self.on_lease is not None
                if pending:
                    kept = self.on_lease(self.lease)
                    pending = False
                    if kept:
                        log.info("endpoints put again on lease %x: %s", self.lease, ", ".join(kept))
            except Exception as exc:   # etcd away (LabError), or what on_lease met: again in a second
                log.warning("%s; retrying", exc)
                self._stop.wait(1.0)
                continue
            self._stop.wait(max(self.ttl / 3, 0.5))

    def stop(self) -> None:
        """Stop refreshing, and revoke the lease: the key goes now, not a TTL later."""
        self._stop.set()
        self._thread.join(timeout=5)
        if self.lease:
            try:
                self.store.revoke(self.lease)
            except LabError as exc:
                log.warning("could not revoke the lease: %s", exc)


def from_environment(socket_path: str, on_lease=None) -> Membership | None:
    """The daemon's membership, if $LABCTL_CLUSTER_HOST says it is a cluster host; else None."""
    name = os.environ.get("LABCTL_CLUSTER_HOST")
    if not name:
        return None
    return Membership(name, os.environ.get("LABCTL_CLUSTER_ADDRESS", ""), socket_path,
                      os.environ.get("LABCTL_CLUSTER_STORE", STORE_URL),
                      int(os.environ.get("LABCTL_CLUSTER_TTL", DEFAULT_TTL)), on_lease=on_lease)
