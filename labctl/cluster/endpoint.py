"""A container on an overlay network (step 13): `docker run --network OVERLAYNET` on a cluster host.

What attach() does, in the host's daemon, while PID 1 waits for GO (as for a bridge network):
  1. the network's namespace on this host, with its bridge and VXLAN device (vxlan.join, once);
  2. an address from etcd (allocation.allocate_address: one transaction, so no two containers on any
     host ever get one), its key holding the endpoint's MAC, its host's underlay address, the
     container's name and its /etc/hosts, and put with the host's lease (membership.py): when the host's
     daemon dies, etcd deletes the key a TTL later and the other hosts' watches drop its FDB entries;
  3. a veth pair: one end on the network's bridge, the other moved into PID 1's network namespace,
     renamed eth0, given the MAC (02:42 + the address, as Docker does) and the address;
  4. /etc/hosts rewritten in place (the bind mount pins its inode) with every endpoint's name: the
     daemon's watch (agent.py) rewrites it again whenever an endpoint joins or leaves the network, which
     is how Docker's first overlay driver resolved container names (no DNS server: a file kept current).
detach() deletes the key (if it is still this container's) and the veth pair (the end inside goes
with it). A container that dies with its daemon loses its key with the lease; its veth with its netns.

A container that outlives its daemon (live restore, step 11) must not lose its key when the dead
daemon's lease runs out: each time membership.py takes a new lease (the daemon started again, or etcd
let the old lease expire), reregister() puts the keys of this host's running containers again, on the
new lease, unless another endpoint took the address meanwhile (a transaction decides: store.claim).

No default route: an overlay network reaches its own containers, on every host, and nothing else.
"""
from __future__ import annotations

import ipaddress
import json
import os
import time

from labctl.errors import LabError

IP_PREFIX = "/labctl/overlay/ip/"


def this_host():
    """The Host this daemon serves ($LABCTL_CLUSTER_HOST, hostN), or None outside a cluster."""
    from labctl.cluster import Host
    name = os.environ.get("LABCTL_CLUSTER_HOST", "")
    return Host(int(name[4:])) if name.startswith("host") and name[4:].isdigit() else None


def store():
    from labctl.cluster import STORE_URL
    from labctl.cluster.store import Store
    return Store(os.environ.get("LABCTL_CLUSTER_STORE", STORE_URL), netns=None)


def is_overlay(name: str) -> bool:
    """Whether NAME is an overlay network of the cluster this process's daemon is a host of."""
    if this_host() is None or not name or "/" in name:
        return False
    from labctl.cluster.allocation import networks
    try:
        return name in networks(store())
    except LabError:
        return False


def host_lease(host, timeout: float = 10.0) -> int:
    """The lease of the host's own key (/labctl/hosts/hostN): the daemon's membership keeps it alive."""
    from labctl.cluster import HOSTS_PREFIX
    deadline = time.monotonic() + timeout
    while True:
        found = [lease for key, _, lease in store().get_prefix(HOSTS_PREFIX + host.name) if key == HOSTS_PREFIX + host.name]
        if found and found[0]:
            return found[0]
        if time.monotonic() > deadline:
            raise LabError(f"{host.name} is not registered in the cluster store",
                           "is its daemon's membership running? `labctl cluster status`")
        time.sleep(0.1)


def attach(name: str, container: str, hostname: str, pid: int, files: dict[str, str]) -> dict:
    """Steps 1-4 of the module docstring for PID 1 `pid`; returns what detach() needs."""
    from labctl.cluster import vxlan
    from labctl.cluster.allocation import allocate_address, networks
    host, found = this_host(), store()
    net = networks(found).get(name)
    if host is None or net is None:
        raise LabError(f"there is no overlay network {name}", f"create it: docker network create -d overlay {name}")
    ov = vxlan.join(host, net)
    hosts_file = files.get("/etc/hosts", "")
    address = allocate_address(found, name, host.name, container, lease=host_lease(host), extra=lambda a: {
        "underlay": host.address, "mac": vxlan.mac_for(a), "name": container, "hostname": hostname,
        "hosts_file": hosts_file})
    info = {"driver": "overlay", "overlay": name, "address": address, "mac": vxlan.mac_for(address),
            "host": host.name, "endpoint": container, "netns": ov, "veth": veth_name(address),
            "subnet": net["subnet"], "hostname": hostname, "hosts_file": hosts_file}
    try:
        plug(ov, pid, address, ipaddress.IPv4Network(net["subnet"]).prefixlen)
        if hosts_file:
            write_hosts(hosts_file, address, hostname, vxlan.endpoints(found, name))
    except BaseException:
        detach(info)
        raise
    return info


def reregister(lease: int, attachments: list[dict]) -> list[str]:
    """These endpoints (the overlay attachments of this host's running containers: containers/networking.py
    overlay_attachments) put again on the host's new lease, their addresses kept (see the module
    docstring). An address another endpoint holds now is logged, not taken. Returns "name=address"s."""
    import logging
    host, found, kept = this_host(), store(), []
    for info in attachments:
        if info.get("host") != host.name:
            continue
        value = {"host": host.name, "endpoint": info["endpoint"], "underlay": host.address, "mac": info["mac"],
                 "name": info["endpoint"], "hostname": info.get("hostname", ""), "hosts_file": info.get("hosts_file", "")}

        def mine(old: str, endpoint=info["endpoint"]) -> bool:
            held = json.loads(old)
            return held.get("host") == host.name and held.get("endpoint") == endpoint
        if found.claim(f"{IP_PREFIX}{info['overlay']}/{info['address']}", json.dumps(value), lease, mine):
            kept.append(f"{info['endpoint']}={info['address']}")
        else:
            logging.getLogger("labctl.daemon").warning("%s's address %s on %s is held by another endpoint now",
                                                       info["endpoint"], info["address"], info["overlay"])
    return kept


def veth_name(address: str) -> str:
    """labve + the address's last two bytes (10.207.3.17: labve3x17): unique in the network's namespace."""
    return "labve" + address.split(".", 2)[2].replace(".", "x")


def plug(ov: str, pid: int, address: str, prefixlen: int) -> None:
    """A veth pair from the overlay namespace's bridge into PID's network namespace (eth0, MAC, address)."""
    from labctl.cluster.vxlan import BRIDGE, mac_for
    from labctl.network.netlink import iproute
    from labctl.network.netns import in_netns, netns_path
    from labctl.network.sysctl import quiet_ipv6
    outer, inner = veth_name(address), "labvp" + veth_name(address)[5:]
    with iproute(ov) as ns:
        ns.link("add", ifname=outer, kind="veth", peer=inner)
        in_netns(ov, quiet_ipv6, outer)
        ns.link("set", index=ns.link_lookup(ifname=outer)[0], master=ns.link_lookup(ifname=BRIDGE)[0], state="up")
        ns.link("set", index=ns.link_lookup(ifname=inner)[0], net_ns_pid=pid)
    with iproute(netns_path(pid)) as ns:
        index = ns.link_lookup(ifname=inner)[0]
        ns.link("set", index=index, ifname="eth0", address=mac_for(address))
        in_netns(netns_path(pid), quiet_ipv6, "eth0")
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        ns.addr("add", index=index, address=address, prefixlen=prefixlen)
        ns.link("set", index=index, state="up")


def hosts_text(address: str, hostname: str, endpoints: dict[str, dict]) -> str:
    lines = ["127.0.0.1\tlocalhost", f"{address}\t{hostname}"]
    for other, ep in sorted(endpoints.items(), key=lambda item: ipaddress.IPv4Address(item[0])):
        names = [n for n in dict.fromkeys((ep.get("name"), ep.get("hostname"))) if n and other != address]
        if names:
            lines.append(f"{other}\t{' '.join(names)}")
    return "\n".join(lines) + "\n"


def write_hosts(path: str, address: str, hostname: str, endpoints: dict[str, dict]) -> None:
    """Rewrite the container's /etc/hosts in place (PID 1 has this inode bind-mounted: no rename)."""
    text = hosts_text(address, hostname, endpoints)
    try:
        with open(path, "r+") as f:
            if f.read() == text:
                return
            f.seek(0)
            f.write(text)
            f.truncate()
    except FileNotFoundError:
        pass   # the container is gone (its directory removed): nothing to keep current


def detach(info: dict) -> None:
    """The endpoint's key (only while it is still this container's) and its veth pair."""
    import contextlib
    from labctl.network.netlink import iproute
    key = f"{IP_PREFIX}{info['overlay']}/{info['address']}"
    with contextlib.suppress(LabError):
        found = store()
        for k, value, _ in found.get_prefix(key):
            if k == key and json.loads(value).get("endpoint") == info["endpoint"] \
                    and json.loads(value).get("host") == info["host"]:
                found.delete(key)
    with contextlib.suppress(Exception):
        with iproute(info["netns"]) as ns:
            index = ns.link_lookup(ifname=info["veth"])
            if index:
                ns.link("del", index=index[0])
