"""Step 13's demo on `labctl cluster`: two hosts, one overlay network, a server container on host1 and a
client container on host2, a ping read on both sides of the tunnel, the overlay's cost measured, and a
host's daemon killed: its container's endpoint leaves etcd and the other host's FDB when its lease expires.

    with cluster(ttl) as c:            cluster up 2; through host1's daemon socket, as `docker -H
                                       unix://HOST1 network create -d overlay demo13` sends it, the
                                       network; `docker run -d --network demo13` of srv on host1 and
                                       of cli on host2; the other host's FDB has each container's MAC;
                                       cluster down on the way out (the containers with their hosts)
    ask(c)                             a TCP connection from cli to srv's port 80: srv's `nc` answers
    packet(c)                          the same ICMP echo captured in cli (its eth0: the inner frame)
                                       and on the underlay (host2's port on labul0: UDP 4789, the VNI)
    measure(c)                         RTT and TCP throughput: loopback, bridge, overlay (cli → srv)
    kill_and_time_lease(c)             SIGKILL host2's daemon; poll etcd and host1's FDB until cli's
                                       host key, endpoint key and FDB entry are gone

The containers are the daemons' own (their processes, cgroups, veths): the demo reads them from the
kernel by PID 1's /proc/PID/ns/net, which labctl's namespace helpers accept as they accept a name.
Everything is the cluster's (hosts.up journals it as one record): `cluster down` removes it, also
after Ctrl-C (the context manager's finally), and `labctl cleanup` after a SIGKILL of the demo.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

from labctl.demos import multihost

NETWORK = "demo13"
IMAGE = "busybox"
SERVER = "while true; do echo pong | nc -l -p 80; done"     # one line per connection, for ever


@dataclass
class Cluster:
    hosts: list
    store: object
    net: dict                 # the network's record in etcd: subnet, vni
    server: dict              # srv on host1: name, host, id, pid, address, mac, netns (/proc/PID/ns/net)
    client: dict              # cli on host2


def daemon_call(socket_path: str, method: str, url: str, body=None):
    """One request to a host's daemon over its Unix socket (labctl's own client, as `labctl --host`)."""
    from labctl.client import remote
    from labctl.errors import LabError
    try:
        return remote.call(socket_path, method, url, body)
    except remote.Error as exc:
        raise LabError(f"{method} {url} on {socket_path}: {exc}",
                       "read the host's daemon.log (`labctl cluster status`), then `labctl cluster down`") from None


def run_container(host, name: str, command: list[str]) -> dict:
    """`docker -H unix://SOCKET run -d --network demo13 --name NAME busybox COMMAND` on the host: create,
    start, inspect (PID 1's PID); its eth0 read from the kernel inside /proc/PID/ns/net."""
    body = {"Image": IMAGE, "Cmd": command, "HostConfig": {"NetworkMode": NETWORK}}
    cid = daemon_call(host.socket, "POST", f"/containers/create?name={name}", body)["Id"]
    daemon_call(host.socket, "POST", f"/containers/{cid}/start")
    pid = daemon_call(host.socket, "GET", f"/containers/{cid}/json")["State"]["Pid"]
    netns = f"/proc/{pid}/ns/net"
    return {"name": name, "host": host.name, "id": cid[:12], "pid": pid, "netns": netns, **eth0(netns)}


def eth0(netns: str) -> dict:
    """eth0's address, prefix length and MAC in the namespace, as the kernel has them (netlink)."""
    from labctl.network.netlink import iproute
    with iproute(netns) as ns:
        index = ns.link_lookup(ifname="eth0")[0]
        addr = ns.addr("dump", index=index)[0]
        return {"address": addr.get_attr("IFA_ADDRESS"), "prefixlen": addr["prefixlen"],
                "mac": ns.link("get", index=index)[0].get_attr("IFLA_ADDRESS")}


def fdb(host, vni: int) -> dict[str, str]:
    """{MAC: underlay address}: the host's VXLAN device's entries for the network (its remote endpoints),
    read over netlink in the network's namespace on that host (lab-hostN-ovVNI, device labvxVNI)."""
    from labctl.cluster import vxlan
    from labctl.network.netlink import iproute
    with iproute(vxlan.overlay_netns(host, vni)) as ns:   # no namespace, no device: an error, never "gone"
        vx = ns.link_lookup(ifname=vxlan.vxlan_name(vni))[0]
        return {e.get_attr("NDA_LLADDR"): e.get_attr("NDA_DST") for e in ns.fdb("dump", ifindex=vx)
                if e.get_attr("NDA_DST")}


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            from labctl.errors import LabError
            raise LabError(f"{what}: not after {timeout:.0f} s",
                           "read the hosts' daemon.log, then `labctl cluster down`")
        time.sleep(0.05)


@contextlib.contextmanager
def cluster(ttl: int = 5) -> Iterator[Cluster]:
    """`cluster up 2` with a short lease TTL, the overlay network, srv on host1 and cli on host2."""
    from labctl.cluster import allocation, hosts
    from labctl.cluster.store import Store
    made = hosts.up(2, ttl)
    try:
        h1, h2 = made
        daemon_call(h1.socket, "POST", "/networks/create", {"Name": NETWORK, "Driver": "overlay"})
        store = Store()
        net = allocation.networks(store)[NETWORK]
        c = Cluster(made, store, net, run_container(h1, "srv", ["sh", "-c", SERVER]),
                    run_container(h2, "cli", ["sleep", "1000"]))
        # each host's agent watches etcd and programs the other's endpoint in its VXLAN device
        _wait(lambda: fdb(h2, net["vni"]).get(c.server["mac"]) == h1.address
              and fdb(h1, net["vni"]).get(c.client["mac"]) == h2.address, 10, "the hosts' FDBs lack the containers")
        yield c
    finally:
        hosts.down()


def ask(c: Cluster, port: int = 80) -> bytes:
    """A TCP connection from inside cli to srv's address: what srv's `nc` sends back."""
    from labctl.network.netns import socket_in_netns
    sock = socket_in_netns(c.client["netns"])
    with sock:
        sock.settimeout(5)
        sock.connect((c.server["address"], port))
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        return data


def packet(c: Cluster) -> tuple[dict, dict]:
    """One ICMP echo from cli to srv, as cli's eth0 saw it and as the underlay carried it (host2's port)."""
    from labctl.cluster import UNDERLAY_NS
    src, dst = c.client, c.server
    inside = multihost.open_capture(src["netns"], "eth0")
    outside = multihost.open_capture(UNDERLAY_NS, c.hosts[1].underlay_ifname)
    try:
        rtts = multihost.ping(src["netns"], dst["address"], count=1, timeout=2.0)
        time.sleep(0.05)
        inner = [d for d in map(multihost.decode_ethernet, multihost.drain(inside))
                 if d and d.get("proto") == "ICMP" and d["dst"] == dst["address"]]
        outer = [d for d in multihost.udp_seen(multihost.drain(outside))
                 if d["vxlan"] and d.get("inner_proto") == "ICMP" and d.get("inner_dst") == dst["address"]]
    finally:
        inside.close()
        outside.close()
    if not rtts or not inner or not outer:
        from labctl.errors import LabError
        raise LabError(f"the echo from {src['address']} to {dst['address']} was not seen on both sides "
                       f"(replies {len(rtts)}, inside {len(inner)}, underlay {len(outer)})",
                       "`labctl cluster status`; then `labctl cluster down` and run the demo again")
    return inner[0], outer[0]


def packet_rows(inner: dict, outer: dict) -> list[list[str]]:
    """The same packet's fields, seen in the container and on the underlay (table rows)."""
    return [
        ["Ethernet", f"{inner['src_mac']} → {inner['dst_mac']}", f"{outer['outer_src_mac']} → {outer['outer_dst_mac']}"],
        ["IPv4", f"{inner['src']} → {inner['dst']}", f"{outer['outer_src']} → {outer['outer_dst']}"],
        ["transport", "ICMP echo request", f"UDP {outer['sport']} → {outer['dport']}"],
        ["VXLAN", "", f"flags 0x08, VNI {outer['vni']}"],
        ["inside it", "", f"{outer['inner_src_mac']} → {outer['inner_dst_mac']}, "
                          f"{outer['inner_proto']} {outer['inner_src']} → {outer['inner_dst']}"],
        ["length", f"{inner['length']} bytes", f"{outer['length']} bytes (+{outer['length'] - inner['length']})"],
    ]


def measure(c: Cluster, pings: int = 50, megabytes: int = 32) -> dict[str, dict]:
    """{path: {"rtt": [ms...], "mibs": MiB/s}} for loopback (in host1), the underlay bridge (host2 →
    host1: two namespaces on one bridge) and the overlay (cli → srv: the TCP listener is opened by this
    process inside srv's network namespace, next to srv's own `nc` on port 80)."""
    h1, h2 = c.hosts
    paths = {"loopback": (h1.netns, h1.netns, "127.0.0.1"),
             "bridge": (h2.netns, h1.netns, h1.address),
             "overlay": (c.client["netns"], c.server["netns"], c.server["address"])}
    out = {}
    for label, (src, dst_ns, dst) in paths.items():
        multihost.ping(src, dst, count=2)               # ARP resolved, caches warm
        out[label] = {"rtt": multihost.ping(src, dst, count=pings, timeout=1.0),
                      "mibs": multihost.tcp_throughput(src, dst_ns, dst, megabytes)}
    return out


def kill_and_time_lease(c: Cluster, timeout: float = 30.0) -> dict:
    """SIGKILL host2's daemon (cli's), then poll every 0.1 s until host2's key and cli's endpoint key are
    gone from etcd and cli's MAC from host1's FDB. Nobody deletes them: the endpoint key was put with
    host2's lease when cli was attached (labctl/cluster/endpoint.py), so etcd drops both when the lease
    expires, and host1's watch sees the delete. Returns the times (seconds after the kill), the TTL left."""
    from labctl.cluster import HOSTS_PREFIX
    from labctl.daemon import control
    store, (h1, h2), cli = c.store, c.hosts, c.client
    host_key = HOSTS_PREFIX + h2.name
    ep_key = f"/labctl/overlay/ip/{NETWORK}/{cli['address']}"
    fdb_entry = f"{h1.name}'s FDB entry"
    leases = {key: (value, lease) for key, value, lease in store.get_prefix(host_key) + store.get_prefix(ep_key)}
    lease = leases[host_key][1]
    ttl_left = store.time_to_live(lease)
    pid = control.running(h2.socket)["pid"]
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    checks = {"host key": lambda: not any(k == host_key for k, _, _ in store.get_prefix(host_key)),
              "endpoint key": lambda: not any(k == ep_key for k, _, _ in store.get_prefix(ep_key)),
              fdb_entry: lambda: cli["mac"] not in fdb(h1, c.net["vni"])}
    present_at_kill = not checks[fdb_entry]()
    gone: dict[str, float] = {}
    while len(gone) < len(checks) and time.monotonic() - killed < timeout:
        for name, is_gone in checks.items():
            if name not in gone and is_gone():
                gone[name] = time.monotonic() - killed
        time.sleep(0.1)
    return {"pid": pid, "lease": lease, "endpoint_lease": leases.get(ep_key, (None, 0))[1], "ttl_left": ttl_left,
            "gone": gone, "fdb_at_kill": present_at_kill, "mac": cli["mac"],
            "value": json.loads(leases[ep_key][0]) if ep_key in leases else None}
