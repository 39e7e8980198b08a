"""Overlay networks' identities, agreed through the cluster store: each network's subnet and VXLAN
network identifier (VNI), and each endpoint's address, so that no two hosts ever hand out the same.

The keys (etcd, one transaction per decision; store.create puts keys only if none exists yet):

    /labctl/networks/NAME                       {"Name", "Id", "Driver": "overlay", "subnet", "vni"}
    /labctl/overlay/vni/4096                    NAME      the VNI is taken
    /labctl/overlay/block/10.207.0.0            NAME      each /24 block the subnet covers is taken
    /labctl/overlay/ip/NAME/10.207.0.2          {"host", "endpoint"}   the address is taken

create_network() reads what exists, picks the lowest free VNI (from 4096) and /24 block (from
10.207.0.0/16), or checks the ones asked for, and writes the network's key, its VNI's and its blocks'
in one transaction that succeeds only if none of them exists: two hosts racing for one name, VNI or
block cannot both win; the loser reads again and picks the next (or, for a name or a value it asked
for, is refused in one line). Subnets are reserved by /24 block, so two overlapping subnets of
different sizes still collide on a key. allocate_address() does the same for one address.

Ranges: 10.207.0.0/16 overlaps none of the lab's (10.203.0.0/24 default bridge, 10.204.0.0/30
upstream, 10.205.0.0/16 user networks, 10.206.0.0/24 the underlay), and a subnet asked for must not
either. (The VXLAN devices that carry these networks between hosts are the next phase.)
"""
from __future__ import annotations

import ipaddress
import json
import os
import time

from labctl.cluster.store import Store
from labctl.errors import LabError

OVERLAY_POOL = ipaddress.IPv4Network("10.207.0.0/16")
VNI_FIRST, VNI_MAX = 4096, 2 ** 24 - 1
LAB_RANGES = {"the default bridge": "10.203.0.0/24", "the upstream link": "10.204.0.0/30",
              "the daemon's user networks": "10.205.0.0/16", "the cluster's underlay": "10.206.0.0/24"}
NETWORKS = "/labctl/networks/"


def networks(store: Store) -> dict[str, dict]:
    """{name: record} of every overlay network in the store."""
    return {key[len(NETWORKS):]: json.loads(value) for key, value, _ in store.get_prefix(NETWORKS)}


def blocks(subnet: ipaddress.IPv4Network) -> list[str]:
    """The /24 blocks a subnet covers (one for a /24 or smaller): the keys that reserve it."""
    if subnet.prefixlen >= 24:
        return [str(subnet.supernet(new_prefix=24).network_address)]
    return [str(b.network_address) for b in subnet.subnets(new_prefix=24)]


def check_subnet(subnet: str, taken: dict[str, dict]) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(subnet)
    except ValueError as exc:
        raise LabError(f"bad subnet {subnet!r}: {exc}", "give an IPv4 network, e.g. --subnet 10.207.9.0/24") from None
    if not net.is_private or not 20 <= net.prefixlen <= 29:
        raise LabError(f"subnet {subnet} is not a private network from /20 to /29", "e.g. --subnet 10.207.9.0/24")
    for what, other in [*LAB_RANGES.items(), *((f"the overlay network {n}", r["subnet"]) for n, r in taken.items())]:
        if net.overlaps(ipaddress.IPv4Network(other)):
            raise LabError(f"the subnet {subnet} overlaps {other}, {what}",
                           "choose another one, or leave --subnet out and the cluster picks a free /24")
    return net


def _pick(taken: dict[str, dict], subnet: str | None, vni: int | None) -> tuple[ipaddress.IPv4Network, int]:
    used_vnis = {r["vni"] for r in taken.values()}
    if vni is not None:
        if not 1 <= vni <= VNI_MAX:
            raise LabError(f"VNI {vni} is out of range", f"a VXLAN network identifier is 1 to {VNI_MAX}")
        if vni in used_vnis:
            owner = next(n for n, r in taken.items() if r["vni"] == vni)
            raise LabError(f"VNI {vni} is in use by the overlay network {owner}", "give another --vni, or leave it out")
    else:
        vni = next(v for v in range(VNI_FIRST, VNI_MAX) if v not in used_vnis)
    if subnet is not None:
        return check_subnet(subnet, taken), vni
    used = {b for r in taken.values() for b in blocks(ipaddress.IPv4Network(r["subnet"]))}
    for candidate in OVERLAY_POOL.subnets(new_prefix=24):
        if str(candidate.network_address) not in used:
            return candidate, vni
    raise LabError(f"no free /24 left in {OVERLAY_POOL}", "remove an overlay network (`labctl network rm`)")


def create_network(store: Store, name: str, subnet: str | None = None, vni: int | None = None) -> dict:
    """The network's record, its VNI and its subnet's blocks, in one transaction (see the docstring)."""
    if not name or "/" in name or len(name) > 64:
        raise LabError(f"bad network name {name!r}", "a name of 1 to 64 characters, no '/'")
    for _ in range(64):
        taken = networks(store)
        if name in taken:
            raise LabError(f"an overlay network named {name} exists already", f"remove it first, or choose another name")
        net, number = _pick(taken, subnet, vni)
        record = {"Name": name, "Id": os.urandom(32).hex(), "Driver": "overlay", "subnet": str(net), "vni": number,
                  "Created": time.time()}
        keys = {NETWORKS + name: json.dumps(record), f"/labctl/overlay/vni/{number}": name}
        keys.update({f"/labctl/overlay/block/{b}": name for b in blocks(net)})
        if store.create(keys):
            return record
        # another host won a key between our read and our transaction: read again and choose again
    raise LabError(f"could not agree on a subnet and VNI for {name}: the store changed 64 times", "try again")


def remove_network(store: Store, name: str) -> dict:
    """Delete the network's keys (one transaction for the identity); refused while a container on any
    host has an address on it (its key under /labctl/overlay/ip/NAME/), as Docker refuses it."""
    record = networks(store).get(name)
    if record is None:
        raise LabError(f"there is no overlay network {name}", "`labctl network ls` lists them")
    users = [json.loads(value) for _, value, _ in store.get_prefix(f"/labctl/overlay/ip/{name}/")]
    if users:
        raise LabError(f"the overlay network {name} has active endpoints: " + ", ".join(
            f"{u.get('endpoint')} on {u.get('host')}" for u in users),
            "remove those containers (or `docker network disconnect`) on their hosts first")
    keys = [NETWORKS + name, f"/labctl/overlay/vni/{record['vni']}"]
    keys += [f"/labctl/overlay/block/{b}" for b in blocks(ipaddress.IPv4Network(record["subnet"]))]
    store.delete_all(keys)
    for key, _, _ in store.get_prefix(f"/labctl/overlay/ip/{name}/"):
        store.delete(key)
    return record


def allocate_address(store: Store, name: str, host: str, endpoint: str, extra=None, lease: int = 0) -> str:
    """The lowest address of the network no endpoint holds, taken in a transaction (its gateway, the
    first, is kept for the network's bridges). extra(address) adds fields to the key's value (vxlan.py:
    the endpoint's MAC and its host's underlay address, which the other hosts program). lease: the key
    lives as long as that lease (a container's endpoint: its host's, so a dead host's endpoints go)."""
    record = networks(store).get(name)
    if record is None:
        raise LabError(f"there is no overlay network {name}", f"create it: labctl network create -d overlay {name}")
    prefix = f"/labctl/overlay/ip/{name}/"
    hosts = list(ipaddress.IPv4Network(record["subnet"]).hosts())[1:]
    for _ in range(len(hosts) + 64):
        held = {key[len(prefix):] for key, _, _ in store.get_prefix(prefix)}
        free = next((str(a) for a in hosts if str(a) not in held), None)
        if free is None:
            raise LabError(f"the overlay network {name} has no free address", "remove an endpoint, or use a larger subnet")
        value = {"host": host, "endpoint": endpoint, **(extra(free) if extra else {})}
        if store.create({prefix + free: json.dumps(value)}, lease):
            return free
    raise LabError(f"could not take an address on {name}: the store kept changing", "try again")
