"""Step 13: overlay networks agreed through etcd (labctl/cluster/allocation.py): each network's subnet
and VNI, each endpoint's address, decided in transactions, so racing hosts never take one twice.

Judged by etcd itself, read with Debian's etcdctl inside the underlay namespace, and by the CLI's exit
codes; the allocations are made from inside the hosts' own namespaces, over the underlay.
"""
from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import run_labctl
from test_cluster import NOTHING, cluster_objects, etcdctl, pytestmark  # noqa: F401  (the same skip)


@pytest.fixture
def cluster3():
    up = run_labctl("cluster", "up", "3")
    assert up.returncode == 0, up.stderr + up.stdout
    try:
        yield
    finally:
        assert run_labctl("cluster", "down").returncode == 0
        assert cluster_objects() == NOTHING


def stored(prefix: str) -> dict[str, str]:
    out = etcdctl("get", "--prefix", prefix, "-w", "json")
    assert out.returncode == 0, out.stderr
    return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv["value"]).decode()
            for kv in json.loads(out.stdout).get("kvs", [])}


def overlay_networks() -> dict[str, dict]:
    return {k.rsplit("/", 1)[1]: json.loads(v) for k, v in stored("/labctl/networks/").items()}


def create(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "labctl", "network", "create", "-d", "overlay", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_concurrent_creates_agree_on_distinct_subnets_and_vnis(cluster3):
    procs = [create(f"net{i}") for i in range(8)] + [create("same") for _ in range(4)]
    results = [(p.wait(timeout=60), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results[:8]), results
    same = results[8:]
    assert sorted(code for code, _ in same) == [0, 2, 2, 2], same   # one name, one winner
    assert all("exists already" in err for code, err in same if code)
    nets = overlay_networks()
    assert sorted(nets) == sorted([f"net{i}" for i in range(8)] + ["same"])
    assert len({n["vni"] for n in nets.values()}) == 9 and len({n["subnet"] for n in nets.values()}) == 9
    assert {n["vni"] for n in nets.values()} == set(range(4096, 4105))
    vnis = stored("/labctl/overlay/vni/")
    assert {v: k for k, v in vnis.items()} == {n: f"/labctl/overlay/vni/{r['vni']}" for n, r in nets.items()}
    removed = run_labctl("network", "rm", "-d", "overlay", "net3")
    assert removed.returncode == 0 and "net3" not in overlay_networks()
    assert f"/labctl/overlay/vni/{nets['net3']['vni']}" not in stored("/labctl/overlay/vni/")


def test_twenty_endpoints_on_three_hosts_get_twenty_addresses(cluster3):
    from labctl.cluster import STORE_URL, Host, allocation
    from labctl.cluster.store import Store
    assert run_labctl("network", "create", "-d", "overlay", "web", "--subnet", "10.207.40.0/27").returncode == 0

    def take(i: int) -> str:   # from inside host 1, 2 or 3, over the underlay, as its daemon would
        host = Host(i % 3 + 1)
        return allocation.allocate_address(Store(STORE_URL, netns=host.netns), "web", host.name, f"c{i}")
    with ThreadPoolExecutor(20) as pool:
        addresses = list(pool.map(take, range(20)))
    assert len(set(addresses)) == 20
    held = stored("/labctl/overlay/ip/web/")
    assert sorted(k.rsplit("/", 1)[1] for k in held) == sorted(addresses)
    assert sorted(json.loads(v)["endpoint"] for v in held.values()) == sorted(f"c{i}" for i in range(20))
    assert "10.207.40.1" not in addresses   # the gateway


def test_bad_overlay_input_is_one_line_and_changes_nothing(cluster3):
    assert run_labctl("network", "create", "-d", "overlay", "a", "--subnet", "10.207.8.0/24", "--vni", "5000").returncode == 0
    before = stored("/labctl/")
    for args, says in ((["b", "--subnet", "10.207.8.128/25"], "overlaps 10.207.8.0/24"),
                       (["b", "--subnet", "10.207.0.0/20"], "overlaps 10.207.8.0/24"),
                       (["b", "--subnet", "10.205.3.0/24"], "the daemon's user networks"),
                       (["b", "--vni", "5000"], "VNI 5000 is in use by the overlay network a"),
                       (["a"], "exists already")):
        out = run_labctl("network", "create", "-d", "overlay", *args)
        assert out.returncode == 2 and says in out.stderr and len(out.stderr.splitlines()) == 1, (args, out.stderr)
    after = stored("/labctl/")
    assert {k: v for k, v in after.items() if not k.startswith("/labctl/hosts/")} == \
        {k: v for k, v in before.items() if not k.startswith("/labctl/hosts/")}


def test_no_cluster_is_one_line():
    out = run_labctl("network", "create", "-d", "overlay", "web")
    assert out.returncode == 2 and "cluster store" in out.stderr and "labctl cluster up" in out.stderr
    assert len(out.stderr.splitlines()) == 1 and cluster_objects() == NOTHING


def test_endpoints_on_two_hosts_talk_tcp_through_vxlan(cluster3):
    from labctl.cluster import Host, vxlan
    from labctl.cluster.store import Store
    from labctl.network.netlink import iproute
    assert run_labctl("network", "create", "-d", "overlay", "web").returncode == 0
    store = Store()
    a = vxlan.add_endpoint(store, Host(1), "web", "a")
    b = vxlan.add_endpoint(store, Host(2), "web", "b")
    assert vxlan.sync(store, Host(1), "web") == 1 and vxlan.sync(store, Host(2), "web") == 1
    vni = overlay_networks()["web"]["vni"]
    with iproute(vxlan.overlay_netns(Host(1), vni)) as ns:   # the FDB, read over netlink: b's MAC → host2
        vx = ns.link_lookup(ifname=f"labvx{vni}")[0]
        link = ns.link("get", index=vx)[0].get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
        assert link.get("IFLA_VXLAN_ID") == vni and link.get("IFLA_VXLAN_LOCAL") == "10.206.0.1"
        fdb = {(e.get_attr("NDA_LLADDR"), e.get_attr("NDA_DST")) for e in ns.fdb("dump", ifindex=vx)}
        assert (b["mac"], "10.206.0.2") in fdb
        assert not [d for mac, d in fdb if mac == "00:00:00:00:00:00"], "no flooding entry: one host per MAC"
    nft = ["ip", "netns", "exec", "lab-host2", "nft"]   # a counter of VXLAN packets reaching host2's eth0
    subprocess.run(nft + ["-f", "-"], check=True, text=True, input="table inet vxcount {\n chain input {\n"
                   "  type filter hook input priority 0; iifname eth0 udp dport 4789 counter\n }\n}\n")
    with counted_on_the_real_host() as outside:
        ping = subprocess.run(["ip", "netns", "exec", a["netns"], "busybox", "ping", "-c", "2", "-W", "2",
                               b["address"]], capture_output=True, text=True)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        _tcp(a, b)
        assert outside() == [0, 0, 0, 0], "a packet of the underlay or an overlay reached the real host's namespace"
    rules = json.loads(subprocess.run(nft + ["-j", "list", "table", "inet", "vxcount"], capture_output=True,
                                      text=True, check=True).stdout)["nftables"]
    counted = [r["rule"]["expr"][-1]["counter"]["packets"] for r in rules if "rule" in r]
    assert counted and counted[0] >= 5, counted   # 2 pings, the TCP handshake and data: all in UDP 4789


def _tcp(a: dict, b: dict) -> None:
    from labctl.network.netns import socket_in_netns
    server = socket_in_netns(b["netns"])
    with server:
        server.bind((b["address"], 0))
        server.listen()
        client = socket_in_netns(a["netns"])
        with client:
            client.settimeout(5)
            client.connect((b["address"], server.getsockname()[1]))
            conn, peer = server.accept()
            with conn:
                client.sendall(b"over vxlan")
                assert conn.recv(10) == b"over vxlan" and peer[0] == a["address"]


@contextlib.contextmanager
def counted_on_the_real_host():
    """nft counters in the real host's namespace, for any packet from or to the underlay or the overlays
    (10.206.0.0/15), arriving or sent; yields a function that reads them. The table goes at the end."""
    table = "labctl_test_cluster_egress"
    rules = "".join(f"  chain {hook} {{ type filter hook {hook} priority -400; ip saddr 10.206.0.0/15 counter; "
                    f"ip daddr 10.206.0.0/15 counter; }}\n" for hook in ("prerouting", "output"))
    subprocess.run(["nft", "-f", "-"], check=True, text=True, input=f"table ip {table} {{\n{rules}}}\n")

    def read() -> list[int]:
        out = json.loads(subprocess.run(["nft", "-j", "list", "table", "ip", table], capture_output=True,
                                        text=True, check=True).stdout)["nftables"]
        return [r["rule"]["expr"][-1]["counter"]["packets"] for r in out if "rule" in r]
    try:
        yield read
    finally:
        subprocess.run(["nft", "delete", "table", "ip", table], check=True)


def test_docker_network_create_d_overlay_on_one_host_is_seen_on_the_others(cluster3):
    def docker(host: int, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "-H", f"unix:///run/labctl/cluster/host{host}.sock", *args],
                              capture_output=True, text=True, timeout=30)
    made = docker(1, "network", "create", "-d", "overlay", "shared")
    assert made.returncode == 0, made.stderr
    assert "shared" in overlay_networks()                 # in etcd, not in host1's state directory
    for host in (2, 3):
        listed = docker(host, "network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}")
        assert listed.returncode == 0 and "shared overlay global" in listed.stdout.splitlines(), listed.stderr
        inspected = json.loads(docker(host, "network", "inspect", "shared").stdout)[0]
        assert inspected["IPAM"]["Config"][0]["Subnet"] == overlay_networks()["shared"]["subnet"]
    again = docker(3, "network", "create", "-d", "overlay", "shared")
    assert again.returncode != 0 and "exists already" in again.stderr
    assert docker(2, "network", "rm", "shared").returncode == 0
    assert "shared" not in overlay_networks()
    assert "shared" not in docker(1, "network", "ls", "--format", "{{.Name}}").stdout.split()


def test_a_watch_programs_an_endpoint_added_on_another_host_and_removes_it_when_it_goes(cluster3):
    from labctl.cluster import Host, vxlan
    from labctl.cluster.store import Store
    from labctl.cluster.watch import EndpointWatch
    from labctl.network.netlink import iproute
    assert run_labctl("network", "create", "-d", "overlay", "web").returncode == 0
    store = Store()
    a = vxlan.add_endpoint(store, Host(1), "web", "a")
    watches = [EndpointWatch(Host(1), "web").start(), EndpointWatch(Host(2), "web").start()]
    try:
        vni = overlay_networks()["web"]["vni"]

        def fdb_on_host1() -> set:
            with iproute(vxlan.overlay_netns(Host(1), vni)) as ns:
                vx = ns.link_lookup(ifname=f"labvx{vni}")[0]
                return {(e.get_attr("NDA_LLADDR"), e.get_attr("NDA_DST")) for e in ns.fdb("dump", ifindex=vx)
                        if e.get_attr("NDA_DST")}
        assert fdb_on_host1() == set()
        started = time.monotonic()
        b = vxlan.add_endpoint(store, Host(2), "web", "b")   # nobody calls sync(): the watch must see it
        while (b["mac"], "10.206.0.2") not in fdb_on_host1() and time.monotonic() - started < 5:
            time.sleep(0.005)
        took = time.monotonic() - started
        assert (b["mac"], "10.206.0.2") in fdb_on_host1(), took
        print(f"endpoint on host2 programmed on host1 {took * 1000:.0f} ms after add_endpoint began")
        ping = subprocess.run(["ip", "netns", "exec", a["netns"], "busybox", "ping", "-c", "1", "-W", "2",
                               b["address"]], capture_output=True, text=True)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        vxlan.remove_endpoint(store, Host(2), "web", b)
        deadline = time.monotonic() + 5
        while fdb_on_host1() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert fdb_on_host1() == set()
    finally:
        for watch in watches:
            watch.stop()
