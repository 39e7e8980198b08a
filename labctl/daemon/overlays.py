"""Overlay networks through the Docker API (step 13): `docker network create -d overlay NAME` on any
cluster host's daemon, seen by `docker network ls|inspect` on every host, removed by `docker network rm`
on any. The records live in the cluster's etcd (labctl/cluster/allocation.py), not in the host's state
directory: that is what makes them global (Docker says Scope "global"), as libnetwork kept overlay
networks in its --cluster-store. Only a daemon started as a cluster host ($LABCTL_CLUSTER_HOST,
labctl/cluster/hosts.py) has a store; any other refuses the driver in one line.
"""
from __future__ import annotations

import os

from labctl.daemon.api import ApiError
from labctl.daemon.translate import timestamp
from labctl.errors import LabError


def store():
    """The cluster store this daemon reaches over its host's underlay, or None (not a cluster host)."""
    if not os.environ.get("LABCTL_CLUSTER_HOST"):
        return None
    from labctl.cluster import STORE_URL
    from labctl.cluster.store import Store
    return Store(os.environ.get("LABCTL_CLUSTER_STORE", STORE_URL), netns=None)


def records() -> dict[str, dict]:
    """{name: record} of the cluster's overlay networks ({} outside a cluster)."""
    found = store()
    if found is None:
        return {}
    from labctl.cluster import allocation
    return _api(lambda: allocation.networks(found))


def network_json(record: dict) -> dict:
    gateway = str(next(__import__("ipaddress").IPv4Network(record["subnet"]).hosts()))
    return {"Name": record["Name"], "Id": record["Id"], "Created": timestamp(record.get("Created")),
            "Scope": "global", "Driver": "overlay", "EnableIPv6": False, "Internal": False, "Attachable": False,
            "Ingress": False, "IPAM": {"Driver": "default", "Options": {},
                                       "Config": [{"Subnet": record["subnet"], "Gateway": gateway}]},
            "Containers": {}, "Options": {"com.docker.network.driver.overlay.vxlanid_list": str(record["vni"])},
            "Labels": record.get("Labels") or {}}


def create(name: str, labels: dict) -> dict:
    found = store()
    if found is None:
        raise ApiError(400, "network driver 'overlay': this daemon is no cluster host "
                            "(start one with `labctl cluster up N`, and use its socket)")
    from labctl.cluster import allocation
    return _api(lambda: allocation.create_network(found, name), conflict="exists already")


def remove(name: str) -> None:
    from labctl.cluster import allocation
    _api(lambda: allocation.remove_network(store(), name))


def _api(call, conflict: str | None = None):
    """LabError → Docker's error: 409 for a name taken, 403 for a network in use (Docker's status),
    503 for a store out of reach, else 400."""
    try:
        return call()
    except LabError as exc:
        status = 409 if conflict and conflict in exc.cause else 503 if "unreachable" in exc.cause \
            else 403 if "active endpoints" in exc.cause else 400
        raise ApiError(status, f"{exc.cause} ({exc.fix})") from None
