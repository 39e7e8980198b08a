"""/networks/... and /volumes/...: `docker network ls|create|inspect|rm` and `docker volume ls|create|
inspect|rm`, over step 6's bridges (labctl/network) and step 7's named volumes (containers/volumes.py).

Networks. Three are built in, as in Docker: "bridge" (the lab's lab0, 10.203.0.0/24), "host" and "none".
`docker network create NAME` (driver bridge) records NAME in <state>/networks/NAME.json with a bridge
of its own (lab + 8 hex digits) and the next free 10.205.N.0/24 (not 10.204/16: the upstream links',
network/upstream.py), and creates the bridge and its nftables table at once (journaled: `labctl
cleanup` removes them); `docker network rm` removes both, and is refused while a container is on it.
`docker run --network NAME` joins it (network/named.py), `docker network connect|disconnect NAME C`
adds a running container to it and takes it off again (containers/networking.py: a veth named eth1,
eth2, ... inside; events "connect" and "disconnect"); `docker network inspect` lists its running
containers. On a cluster host (step 13), `-d overlay` networks come from the cluster's etcd (overlays.py).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import time

from aiohttp import web

from labctl.daemon import overlays
from labctl.daemon.api import ApiError, blocking, find_container, flag, json_body
from labctl.daemon.translate import timestamp
from labctl.errors import LabError

BUILT_IN = {"bridge": "bridge", "host": "host", "none": "null"}
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")
USER_SUBNETS = "10.205.{}.0/24"


def _networks_dir():
    from labctl.network import named
    return named.networks_dir()


def _user_networks() -> dict[str, dict]:
    from labctl.network import named
    return named.records()


def _endpoints(name: str) -> dict[str, dict]:
    """The running containers on the network NAME: {id: {Name, IPv4Address, MacAddress, ...}}, the
    address from the container's record, the MAC from the kernel (eth0 inside its network namespace)."""
    from labctl.containers import store
    out = {}
    from labctl.containers.networking import joined
    for c in store.all_containers():
        info = joined(c).get(name) or {}
        if c.status != "running" or not info.get("address"):
            continue
        net = info.get("network") or info   # a bridge's attachment has its Network; an overlay's, the subnet
        prefix = net.get("subnet", "/32").partition("/")[2]
        out[c.id] = {"Name": c.name, "EndpointID": info.get("host_link") or "",
                     "MacAddress": _mac(c.pid, info.get("interface", "eth0")),
                     "IPv4Address": f"{info['address']}/{prefix}", "IPv6Address": ""}
    return out


def _mac(pid: int, interface: str = "eth0") -> str:
    from labctl.network.netlink import iproute
    from labctl.network.netns import netns_path
    with contextlib.suppress(OSError, LabError, IndexError):
        with iproute(netns_path(pid)) as ns:
            return ns.get_links(ns.link_lookup(ifname=interface)[0])[0].get_attr("IFLA_ADDRESS") or ""
    return ""


def _network_json(name: str, record: dict | None = None) -> dict:
    from labctl import network
    if record is None:   # built in
        net = network.default_network() if name == "bridge" else None
        record = {"Name": name, "Id": name, "Driver": BUILT_IN[name], "Created": 0,
                  "bridge": net.bridge if net else "", "subnet": net.subnet if net else ""}
    config = [{"Subnet": record["subnet"], "Gateway": network.Network(record["bridge"], record["subnet"]).gateway}] \
        if record.get("subnet") else []
    return {"Name": record["Name"], "Id": record["Id"], "Created": timestamp(record.get("Created")),
            "Scope": "local", "Driver": record["Driver"], "EnableIPv6": False, "Internal": False,
            "Attachable": False, "Ingress": False, "IPAM": {"Driver": "default", "Options": {}, "Config": config},
            "Containers": _endpoints(name) if record.get("subnet") else {},
            "Options": {"com.docker.network.bridge.name": record.get("bridge", "")},
            "Labels": record.get("Labels") or {}}


def _find_network(ref: str) -> tuple[str, dict | None]:
    if ref in BUILT_IN:
        return ref, None
    users = _user_networks()
    if ref in users:
        return ref, users[ref]
    users.update(overlays.records())
    if ref in users:
        return ref, users[ref]
    found = [(n, r) for n, r in users.items() if r["Id"].startswith(ref)] if len(ref) >= 3 else []
    if len(found) == 1:
        return found[0]
    raise ApiError(404, f"network {ref} not found")


def _any_network_json(name: str, record: dict | None) -> dict:
    if record and record["Driver"] == "overlay":   # the store's record, and this host's containers on it
        return overlays.network_json(record) | {"Containers": _endpoints(name)}
    return _network_json(name, record)


async def list_networks(request: web.Request) -> web.Response:
    users = await blocking(_user_networks)
    cluster = await blocking(overlays.records)
    return web.json_response([_network_json(n) for n in BUILT_IN] +
                             [await blocking(_network_json, n, r) for n, r in users.items()] +
                             [overlays.network_json(r) for r in cluster.values()])


async def inspect_network(request: web.Request) -> web.Response:
    name, record = await blocking(_find_network, request.match_info["id"])
    return web.json_response(await blocking(_any_network_json, name, record))


def _create_network(name: str, driver: str, labels: dict) -> dict:
    from labctl import network, state
    with state.locked("daemon-networks"):
        users = _user_networks()
        if name in users or name in BUILT_IN:
            raise ApiError(409, f"network with name {name} already exists")
        used = {r["subnet"] for r in users.values()}
        subnet = next((USER_SUBNETS.format(n) for n in range(256) if USER_SUBNETS.format(n) not in used), None)
        if subnet is None:
            raise ApiError(400, "no free subnet left in 10.205.0.0/16 for another network")
        network_id = os.urandom(32).hex()
        record = {"Name": name, "Id": network_id, "Driver": driver, "Created": time.time(), "Labels": labels,
                  "bridge": f"lab{network_id[:8]}", "subnet": subnet}
        state.atomic_write_json(_networks_dir() / f"{name}.json", record)
    try:
        network.ensure_network(network.Network(record["bridge"], subnet))
    except BaseException:
        os.unlink(_networks_dir() / f"{name}.json")
        raise
    return record


async def create_network(request: web.Request) -> web.Response:
    body = await json_body(request)
    name, driver = body.get("Name") or "", body.get("Driver") or "bridge"
    if not isinstance(name, str) or not _NAME.match(name):
        raise ApiError(400, f"invalid network name {name!r}: letters, digits, _ . - (at most 64)")
    if driver not in ("bridge", "overlay"):
        raise ApiError(400, f"network driver {driver!r}: the lab's networks are bridges (step 6) or overlays (step 13)")
    create = overlays.create if driver == "overlay" else lambda n, labels: _create_network(n, driver, labels)
    record = await blocking(create, name, body.get("Labels") or {})
    request.app["engine"].bus.publish("network", "create", record["Id"], name=name, type=driver)
    return web.json_response({"Id": record["Id"], "Warning": ""}, status=201)


def _remove_network(name: str, record: dict) -> None:
    """The bridge and its table, then the record; refused (as Docker does) while a container is on it."""
    from labctl import network
    try:
        network.remove_network(network.Network(record["bridge"], record["subnet"]), refuse_in_use=True)
    except LabError as exc:
        if "active endpoints" not in exc.cause:
            raise
        raise ApiError(403, f"error while removing network: network {name} id {record['Id']} has active endpoints")
    os.unlink(_networks_dir() / f"{name}.json")


async def delete_network(request: web.Request) -> web.Response:
    name, record = await blocking(_find_network, request.match_info["id"])
    if record is None:
        raise ApiError(403, f"{name} is a pre-defined network and cannot be removed")
    if record["Driver"] == "overlay":
        await blocking(overlays.remove, name)
    else:
        await blocking(_remove_network, name, record)
    request.app["engine"].bus.publish("network", "destroy", record["Id"], name=name, type=record["Driver"])
    return web.Response(status=204)


async def connect_network(request: web.Request) -> web.Response:
    """POST /networks/{id}/connect {"Container": ID or name}: `docker network connect` (containers/
    networking.connect: a veth from the network's bridge into the running container, eth1, eth2, ...)."""
    return await _connect(request, "connect")


async def disconnect_network(request: web.Request) -> web.Response:
    """POST /networks/{id}/disconnect {"Container": ..., "Force": bool}: `docker network disconnect`."""
    return await _connect(request, "disconnect")


async def _connect(request: web.Request, action: str) -> web.Response:
    from labctl.containers import networking
    name, record = await blocking(_find_network, request.match_info["id"])
    body = await json_body(request)
    ref = body.get("Container")
    if not isinstance(ref, str) or not ref:
        raise ApiError(400, "the body names no Container")
    if name in ("host", "none"):
        raise ApiError(403, f"container cannot be {action}ed {'to' if action == 'connect' else 'from'} "
                            f"the {name} network")
    container = await find_container(ref)
    try:
        await blocking(getattr(networking, action), container, name)
    except LabError as exc:
        raise ApiError(404 if "not on network" in exc.cause else 403, str(exc)) from None
    request.app["engine"].bus.publish("network", action, record["Id"] if record else name,
                                      container=container.id, name=name, type="bridge")
    return web.Response(status=200)


# ---------------------------------------------------------------------------------------------
# Volumes


def _volume_json(name: str) -> dict:
    from labctl.containers import volumes
    path = volumes.volume_path(name)
    created = 0.0
    with contextlib.suppress(OSError, ValueError):
        created = json.loads((path.parent / "volume.json").read_text()).get("created", 0.0)
    return {"Name": name, "Driver": "local", "Mountpoint": str(path), "CreatedAt": timestamp(created),
            "Labels": {}, "Scope": "local", "Options": {}}


async def list_volumes(request: web.Request) -> web.Response:
    from labctl.containers import volumes
    found = await blocking(volumes.list_volumes)
    return web.json_response({"Volumes": [_volume_json(v["name"]) for v in found], "Warnings": []})


async def create_volume(request: web.Request) -> web.Response:
    from labctl.containers import volumes
    body = await json_body(request, required=False)
    name = body.get("Name") or os.urandom(32).hex()
    if (body.get("Driver") or "local") != "local":
        raise ApiError(400, f"volume driver {body['Driver']!r}: the lab's volumes are local directories")
    if not isinstance(name, str):
        raise ApiError(400, "the volume name must be a string")
    await blocking(volumes.create, name)
    request.app["engine"].bus.publish("volume", "create", name, driver="local")
    return web.json_response(_volume_json(name), status=201)


async def inspect_volume(request: web.Request) -> web.Response:
    from labctl.containers import volumes
    name = request.match_info["name"]
    if not await blocking(volumes.exists, name):
        raise ApiError(404, f"get {name}: no such volume")
    return web.json_response(_volume_json(name))


async def delete_volume(request: web.Request) -> web.Response:
    from labctl.containers import volumes
    name = request.match_info["name"]
    try:
        await blocking(volumes.remove, name, flag(request, "force"))
    except LabError as exc:
        raise ApiError(404 if "no such volume" in exc.cause else 409, str(exc)) from None
    request.app["engine"].bus.publish("volume", "destroy", name, driver="local")
    return web.Response(status=204)


def add_routes(router: web.UrlDispatcher, prefix: str) -> None:
    router.add_get(prefix + "/networks", list_networks, allow_head=False)
    router.add_post(prefix + "/networks/create", create_network)
    router.add_get(prefix + "/networks/{id}", inspect_network, allow_head=False)
    router.add_delete(prefix + "/networks/{id}", delete_network)
    router.add_post(prefix + "/networks/{id}/connect", connect_network)
    router.add_post(prefix + "/networks/{id}/disconnect", disconnect_network)
    router.add_get(prefix + "/volumes", list_volumes, allow_head=False)
    router.add_post(prefix + "/volumes/create", create_volume)
    router.add_get(prefix + "/volumes/{name}", inspect_volume, allow_head=False)
    router.add_delete(prefix + "/volumes/{name}", delete_volume)
