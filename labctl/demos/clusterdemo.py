"""Step 13's demo on `labctl cluster`: two hosts, one overlay network, an endpoint on each, a ping read
on both sides of the tunnel, a host killed and its lease timed, and the overlay's cost measured.

    with cluster(ttl) as c:            cluster up 2, network "demo13", endpoints a (host1) and b (host2),
                                       FDB and neighbour entries synced; cluster down on the way out
    packet(c)                          the same ICMP echo captured in endpoint a (eth0: the inner frame)
                                       and on the underlay (host1's port on labul0: UDP 4789, the VNI)
    measure(c)                         RTT and TCP throughput: loopback, bridge, overlay
    kill_and_time_lease(c)             SIGKILL host2's daemon; poll etcd until its keys are gone

Everything it makes is the cluster's (hosts.up journals it as one record): `cluster down` removes it,
also after Ctrl-C (the context manager's finally), and `labctl cleanup` after a SIGKILL of the demo.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from labctl.demos import multihost

NETWORK = "demo13"


@dataclass
class Cluster:
    hosts: list
    store: object
    net: dict
    a: dict = field(default_factory=dict)     # endpoint on host1: address, mac, netns
    b: dict = field(default_factory=dict)     # endpoint on host2


@contextlib.contextmanager
def cluster(ttl: int = 5) -> Iterator[Cluster]:
    """`cluster up 2` with a short lease TTL, one overlay network, an endpoint on each host."""
    from labctl.cluster import allocation, hosts, vxlan
    from labctl.cluster.store import Store
    made = hosts.up(2, ttl)
    try:
        store = Store()
        net = allocation.create_network(store, NETWORK)
        c = Cluster(made, store, net)
        c.a = vxlan.add_endpoint(store, made[0], NETWORK, "a")
        c.b = vxlan.add_endpoint(store, made[1], NETWORK, "b")
        for host in made:
            vxlan.sync(store, host, NETWORK)
        yield c
    finally:
        hosts.down()


def packet(c: Cluster) -> tuple[dict, dict]:
    """One ICMP echo from endpoint a to b, as endpoint a's eth0 saw it and as the underlay carried it."""
    from labctl.cluster import UNDERLAY_NS
    inside = multihost.open_capture(c.a["netns"], "eth0")
    outside = multihost.open_capture(UNDERLAY_NS, c.hosts[0].underlay_ifname)
    try:
        rtts = multihost.ping(c.a["netns"], c.b["address"], count=1, timeout=2.0)
        time.sleep(0.05)
        inner = [d for d in map(multihost.decode_ethernet, multihost.drain(inside))
                 if d and d.get("proto") == "ICMP" and d["dst"] == c.b["address"]]
        outer = [d for d in multihost.udp_seen(multihost.drain(outside))
                 if d["vxlan"] and d.get("inner_proto") == "ICMP" and d.get("inner_dst") == c.b["address"]]
    finally:
        inside.close()
        outside.close()
    if not rtts or not inner or not outer:
        from labctl.errors import LabError
        raise LabError(f"the echo from {c.a['address']} to {c.b['address']} was not seen on both sides "
                       f"(replies {len(rtts)}, inside {len(inner)}, underlay {len(outer)})",
                       "`labctl cluster status`; then `labctl cluster down` and run the demo again")
    return inner[0], outer[0]


def packet_rows(inner: dict, outer: dict) -> list[list[str]]:
    """The same packet's fields, seen in the endpoint and on the underlay (table rows)."""
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
    """{path: {"rtt": [ms...], "mibs": MiB/s}} for loopback (in host1), the underlay bridge (host1 →
    host2: two namespaces on one bridge) and the overlay (endpoint a → endpoint b)."""
    h1, h2 = c.hosts
    paths = {"loopback": (h1.netns, h1.netns, "127.0.0.1"),
             "bridge": (h1.netns, h2.netns, h2.address),
             "overlay": (c.a["netns"], c.b["netns"], c.b["address"])}
    out = {}
    for label, (src, dst_ns, dst) in paths.items():
        multihost.ping(src, dst, count=2)               # ARP resolved, caches warm
        out[label] = {"rtt": multihost.ping(src, dst, count=pings, timeout=1.0),
                      "mibs": multihost.tcp_throughput(src, dst_ns, dst, megabytes)}
    return out


def kill_and_time_lease(c: Cluster, timeout: float = 30.0) -> dict:
    """SIGKILL host2's daemon and poll etcd (every 0.1 s) until host2's key and its endpoint are gone.
    The endpoint key is first put again on host2's lease, as a host that owns its endpoints does, so
    both go when the lease expires. Returns the times (seconds after the kill) and the TTL seen."""
    from labctl.cluster import HOSTS_PREFIX
    from labctl.daemon import control
    store, h2 = c.store, c.hosts[1]
    host_key = HOSTS_PREFIX + h2.name
    ep_key = f"/labctl/overlay/ip/{NETWORK}/{c.b['address']}"
    lease = next(lease for key, _, lease in store.get_prefix(host_key) if key == host_key)
    value = next(v for key, v, _ in store.get_prefix(ep_key) if key == ep_key)
    store.put(ep_key, value, lease=lease)
    ttl_left = store.time_to_live(lease)
    pid = control.running(h2.socket)["pid"]
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    gone: dict[str, float] = {}
    while len(gone) < 2 and time.monotonic() - killed < timeout:
        for name, key in (("host key", host_key), ("endpoint key", ep_key)):
            if name not in gone and not any(k == key for k, _, _ in store.get_prefix(key)):
                gone[name] = time.monotonic() - killed
        time.sleep(0.1)
    return {"pid": pid, "lease": lease, "ttl_left": ttl_left, "gone": gone, "value": json.loads(value)}
