"""The overlay's data path on one host: a namespace per overlay network, holding a bridge and a VXLAN
device, as Docker's overlay driver builds it; endpoints plugged into that bridge; and the forwarding
(FDB) and neighbour entries that send each remote endpoint's frames to its host, programmed from etcd.

    lab-host1 (netns)                      lab-host1-ov4096 (netns: the network's, on this host)
    eth0 10.206.0.1 ◀── UDP 4789 ──────┐   labovbr (bridge)
                                       └── labvx4096 (vxlan, VNI 4096, local 10.206.0.1, created in
                                       │   lab-host1, so its UDP socket lives there, then moved here)
    lab-host1-ep-a (netns: an endpoint)│   labve40x2 ── eth0 10.207.40.2, MAC 02:42:0a:cf:28:02
                                       │
join(host, net): the network namespace, the bridge, the VXLAN device (learning off, ARP proxy on);
add_endpoint(host, net, name): an address from etcd (allocation.py, with the endpoint's MAC and host),
a namespace and a veth pair into the bridge; sync(host, net): for each endpoint on another host,
  FDB  MAC → dst that host's underlay address   (bridge fdb add MAC dev labvx4096 dst 10.206.0.2)
  ARP  IP → MAC on the VXLAN device             (ip neigh add IP lladdr MAC dev labvx4096)
so an ARP request is answered by the VXLAN device itself (proxy) and a frame goes to the one host
that has the destination: nothing is flooded to every host. (A host's daemon keeps these entries
current as endpoints come and go: agent.py; containers join through endpoint.py.)
"""
from __future__ import annotations

import ipaddress
import json
import os

from labctl.cluster import UNDERLAY_PREFIXLEN, Host
from labctl.cluster.allocation import allocate_address, networks
from labctl.cluster.store import Store
from labctl.network.netlink import iproute
from labctl.network.netns import in_netns, netns_path
from labctl.network.sysctl import quiet_ipv6

import threading
_JOINING = threading.Lock()
VXLAN_PORT = 4789
BRIDGE = "labovbr"
NTF_SELF = 0x02          # the entry is the VXLAN device's own (with a dst), not its master bridge's
NTF_MASTER = 0x04        # to the port's master: the bridge's entry (a dump marks those with NDA_MASTER)
NUD_PERMANENT = 0x80


def overlay_netns(host: Host, vni: int) -> str:
    return f"{host.netns}-ov{vni}"


def endpoint_netns(host: Host, endpoint: str) -> str:
    return f"{host.netns}-ep-{endpoint}"


def vxlan_name(vni: int) -> str:
    return f"labvx{vni}"


def mac_for(address: str) -> str:
    """Docker's rule: 02:42 and the four bytes of the IPv4 address (locally administered, unique per address)."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(address).packed)


def _new_netns(name: str) -> None:
    """`ip netns add NAME` without fork(2): a short-lived thread unshares its own network namespace
    (CLONE_NEWNET is per thread) and bind-mounts /proc/thread-self/ns/net on /run/netns/NAME. (pyroute2's
    netns.create forks a child, which can hang in the daemon: forking a process with threads.)"""
    import threading
    from labctl.kernel.syscalls import CLONE_NEWNET, MS_BIND, mount, unshare
    path = netns_path(name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444))
    failed: list[BaseException] = []

    def body() -> None:
        try:
            unshare(CLONE_NEWNET)
            mount("/proc/thread-self/ns/net", path, None, MS_BIND)
        except BaseException as exc:
            failed.append(exc)
    thread = threading.Thread(target=body, name=f"netns add {name}")
    thread.start()
    thread.join()
    if failed:
        os.unlink(path)
        raise failed[0]


def join(host: Host, net: dict) -> str:
    """The network's namespace on this host, its bridge and VXLAN device (once per host and network:
    under a file lock, as the daemon's watch and its containers' starts may ask at the same time)."""
    import fcntl
    from labctl.cluster import RUN_DIR
    ns_name = overlay_netns(host, net["vni"])
    os.makedirs(RUN_DIR, exist_ok=True)   # (the lock always: a namespace that exists may be half made yet)
    # A thread lock between this process's threads, and a POSIX record lock (lockf) between processes:
    # not flock(2), whose lock belongs to the open file, which the children pyroute2 forks would share,
    # holding it for as long as they live.
    with _JOINING, open(os.path.join(RUN_DIR, f"{ns_name}.lock"), "w") as lock:
        fcntl.lockf(lock, fcntl.LOCK_EX)
        if not os.path.exists(netns_path(ns_name)):
            _make(host, net, ns_name)
    return ns_name


def _make(host: Host, net: dict, ns_name: str) -> None:
    _new_netns(ns_name)
    with iproute(ns_name) as ns:
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        ns.link("add", ifname=BRIDGE, kind="bridge")
        in_netns(ns_name, quiet_ipv6, BRIDGE)
        ns.link("set", index=ns.link_lookup(ifname=BRIDGE)[0], state="up")
    vx = vxlan_name(net["vni"])
    with iproute(host.netns) as hostns:   # created in the host's namespace: its UDP socket is there
        hostns.link("add", ifname=vx, kind="vxlan", vxlan_id=net["vni"], vxlan_local=host.address,
                    vxlan_port=VXLAN_PORT, vxlan_learning=0, vxlan_proxy=1)
        fd = os.open(netns_path(ns_name), os.O_RDONLY | os.O_CLOEXEC)
        try:
            hostns.link("set", index=hostns.link_lookup(ifname=vx)[0], net_ns_fd=fd)
        finally:
            os.close(fd)
    with iproute(ns_name) as ns:
        in_netns(ns_name, quiet_ipv6, vx)
        ns.link("set", index=ns.link_lookup(ifname=vx)[0], master=ns.link_lookup(ifname=BRIDGE)[0], state="up")


def add_endpoint(store: Store, host: Host, name: str, endpoint: str) -> dict:
    """An endpoint (a namespace standing in for a container) on the network, with an address from etcd."""
    net = networks(store)[name]
    ov = join(host, net)
    address = allocate_address(store, name, host.name, endpoint,
                               extra=lambda addr: {"underlay": host.address, "mac": mac_for(addr)})
    ep_ns = endpoint_netns(host, endpoint)
    _new_netns(ep_ns)
    outer, inner = "labve" + address.split(".", 2)[2].replace(".", "x"), "labvp" + address.split(".", 2)[2].replace(".", "x")
    with iproute(ov) as ns:
        ns.link("add", ifname=outer, kind="veth", peer=inner)
        in_netns(ov, quiet_ipv6, outer)
        ns.link("set", index=ns.link_lookup(ifname=outer)[0], master=ns.link_lookup(ifname=BRIDGE)[0], state="up")
        fd = os.open(netns_path(ep_ns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            ns.link("set", index=ns.link_lookup(ifname=inner)[0], net_ns_fd=fd)
        finally:
            os.close(fd)
    prefixlen = ipaddress.IPv4Network(net["subnet"]).prefixlen
    with iproute(ep_ns) as ns:
        index = ns.link_lookup(ifname=inner)[0]
        ns.link("set", index=index, ifname="eth0", address=mac_for(address))
        in_netns(ep_ns, quiet_ipv6, "eth0")
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        ns.addr("add", index=index, address=address, prefixlen=prefixlen)
        ns.link("set", index=index, state="up")
    return {"address": address, "mac": mac_for(address), "netns": ep_ns}


def endpoints(store: Store, name: str) -> dict[str, dict]:
    """{address: {"host", "endpoint", "underlay", "mac"}} of the network's endpoints, from etcd."""
    prefix = f"/labctl/overlay/ip/{name}/"
    return {key[len(prefix):]: json.loads(value) for key, value, _ in store.get_prefix(prefix)}


def sync(store: Store, host: Host, name: str) -> int:
    """Program this host's FDB and neighbour entries for every remote endpoint; returns how many."""
    net = networks(store)[name]
    ov = join(host, net)
    remote = {a: e for a, e in endpoints(store, name).items() if e.get("host") != host.name and "mac" in e}
    with iproute(ov) as ns:
        vx = ns.link_lookup(ifname=vxlan_name(net["vni"]))[0]
        for address, ep in remote.items():
            ns.fdb("replace", ifindex=vx, lladdr=ep["mac"], dst=ep["underlay"], flags=NTF_SELF, state=NUD_PERMANENT)
            ns.neigh("replace", dst=address, lladdr=ep["mac"], ifindex=vx, state="permanent")
    return len(remote)


def remove_endpoint(store: Store, host: Host, name: str, endpoint: dict) -> None:
    """The endpoint's address goes back to the network (its key deleted: the other hosts' watches drop
    its FDB and neighbour entries), and its namespace goes, with its veth pair."""
    from labctl.network.netns import remove_netns
    store.delete(f"/labctl/overlay/ip/{name}/{endpoint['address']}")
    remove_netns(endpoint["netns"])
