"""Step 11: user-defined networks through the daemon (`docker network create NAME`, `docker run --network
NAME`), driven by Debian's docker CLI and docker-py on a daemon socket of this module's own.

What the tests believe: the kernel. A container's eth0 and its address as `ip` reads them inside its
network namespace (nsenter), the host end of its veth and that end's master (IFLA_MASTER) as `ip` reads
them on the host, TCP connections made from inside one container's namespace to another's, and the
links and nftables tables left after `docker network rm`. Traffic never leaves the lab's namespaces.
"""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys

import pytest

from helpers import run_labctl
from labctl.containers import store
from test_daemon import DOCKER, daemon, docker  # noqa: F401  (daemon: the module's fixture)

pytestmark = [pytest.mark.root, pytest.mark.skipif(not os.path.exists(DOCKER),
                                                   reason="needs Debian's docker CLI (apt-get install docker.io)")]
PORT = 7000
SERVE = ["sh", "-c", f"exec nc -ll -p {PORT} -e echo hi-from-$(hostname)"]   # busybox nc: one "hi" per connection
CONNECT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as s:
        print("ok", s.recv(100).decode().strip())
except socket.timeout:
    print("timeout")
except OSError as exc:
    print("error", exc.errno)
"""


def eth0(pid: int) -> dict:
    """eth0 inside the process's network namespace, as `ip -j -d addr` reads it there."""
    out = subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "-j", "-d", "addr", "show", "eth0"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]


def address(pid: int) -> str:
    return next(a["local"] for a in eth0(pid)["addr_info"] if a["family"] == "inet")


def host_master_of_peer(pid: int) -> str | None:
    """The master (IFLA_MASTER) of the host end of the container's veth: eth0's link_index names it."""
    peer = eth0(pid)["link_index"]
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout)
    [link] = [l for l in links if l["ifindex"] == peer]
    return link.get("master")


def connect(from_pid: int, to_address: str) -> str:
    """A TCP connection from inside the network namespace of `from_pid` (the host's python, nsenter -n)."""
    return subprocess.run(["nsenter", "-t", str(from_pid), "-n", sys.executable, "-c", CONNECT, to_address, str(PORT)],
                          capture_output=True, text=True, timeout=30).stdout.strip()


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def network(daemon, name: str) -> dict:
    [info] = json.loads(docker(daemon, "network", "inspect", name).stdout)
    return info


def test_containers_on_a_user_network_reach_each_other_and_no_one_else(daemon):
    boxes = {"una": "labneta", "dos": "labneta", "otra": "labnetb", "lejos": "bridge"}
    try:
        for name in ("labneta", "labnetb"):
            assert docker(daemon, "network", "create", name).returncode == 0
        net_a, net_b = network(daemon, "labneta"), network(daemon, "labnetb")
        try:
            una = joined_and_isolated(daemon, boxes, net_a, net_b)
        finally:
            docker(daemon, "rm", "-f", *boxes)
        bridge_a = net_a["Options"]["com.docker.network.bridge.name"]
        assert network(daemon, "labneta")["Containers"] == {} and link_exists(bridge_a)   # the network stays
        ports = subprocess.run(["ip", "-j", "link", "show", "master", bridge_a], capture_output=True, text=True)
        assert json.loads(ports.stdout or "[]") == []                    # ... and its veths went with their containers
        again = docker(daemon, "run", "--rm", "--network", net_a["Id"][:12], "busybox",
                       "ip", "-4", "-o", "addr", "show", "eth0")
        assert f" {una}/24 " in again.stdout, again.stdout + again.stderr   # joined by ID; una's address was given back
        for name, info in (("labneta", net_a), ("labnetb", net_b)):
            bridge = info["Options"]["com.docker.network.bridge.name"]
            assert docker(daemon, "network", "rm", name).returncode == 0
            assert not link_exists(bridge)
            assert subprocess.run(["nft", "list", "table", "ip", f"labctl_{bridge}"], capture_output=True).returncode
    finally:
        docker(daemon, "network", "rm", "labneta", "labnetb")   # (after a failure above)


def joined_and_isolated(daemon, boxes: dict[str, str], net_a: dict, net_b: dict) -> str:
    """Start the boxes, check what the kernel says of their networks; returns una's address."""
    bridge_a = net_a["Options"]["com.docker.network.bridge.name"]
    subnet_a = ipaddress.IPv4Network(net_a["IPAM"]["Config"][0]["Subnet"])
    for box, net in boxes.items():
        run = docker(daemon, "run", "-d", "--name", box, "--hostname", box, "--network", net, "busybox", *SERVE)
        assert run.returncode == 0, run.stderr
    pid = {box: store.find(box).pid for box in boxes}
    una, dos = address(pid["una"]), address(pid["dos"])
    assert ipaddress.IPv4Address(una) in subnet_a and ipaddress.IPv4Address(dos) in subnet_a and una != dos
    assert host_master_of_peer(pid["una"]) == bridge_a == host_master_of_peer(pid["dos"])
    assert host_master_of_peer(pid["otra"]) == net_b["Options"]["com.docker.network.bridge.name"]
    assert connect(pid["dos"], una) == "ok hi-from-una"      # same network: through the bridge
    assert connect(pid["una"], dos) == "ok hi-from-dos"
    assert connect(pid["otra"], una) == "timeout"             # another network: dropped on the way
    assert connect(pid["lejos"], una) == "timeout"            # the default bridge: dropped too
    assert connect(pid["una"], address(pid["otra"])) == "timeout"
    [inspected] = json.loads(docker(daemon, "inspect", "una").stdout)
    on_a = inspected["NetworkSettings"]["Networks"]["labneta"]
    assert (on_a["IPAddress"], on_a["NetworkID"]) == (una, net_a["Id"])
    routes = json.loads(subprocess.run(["nsenter", "-t", str(pid["una"]), "-n", "ip", "-j", "route"],
                                       capture_output=True, text=True).stdout)
    [default] = [r for r in routes if r["dst"] == "default"]   # the kernel's route out: via the bridge
    assert on_a["Gateway"] == net_a["IPAM"]["Config"][0]["Gateway"] == default["gateway"]
    listed = network(daemon, "labneta")["Containers"]
    ids = {store.find(b).id: b for b in ("una", "dos")}
    assert set(listed) == set(ids)
    for cid, box in ids.items():
        assert listed[cid]["Name"] == box and listed[cid]["IPv4Address"] == f"{address(pid[box])}/24"
        assert listed[cid]["MacAddress"] == eth0(pid[box])["address"]
    refused = docker(daemon, "network", "rm", "labneta")
    assert refused.returncode == 1 and "has active endpoints" in refused.stderr, refused.stderr
    assert link_exists(bridge_a)
    return una


def test_an_unknown_network_is_refused(daemon):
    result = docker(daemon, "run", "--rm", "--network", "no-such-net", "busybox", "true")
    assert result.returncode != 0 and "network no-such-net not found" in result.stderr


def test_docker_py_and_labctl_run_join_a_user_network(daemon):
    docker_py = pytest.importorskip("docker")
    client = docker_py.DockerClient(base_url=f"unix://{daemon}", version="1.41")
    net = client.networks.create("labpynet", driver="bridge")
    try:
        subnet = ipaddress.IPv4Network(net.attrs["IPAM"]["Config"][0]["Subnet"])
        bridge = net.attrs["Options"]["com.docker.network.bridge.name"]
        box = client.containers.run("busybox", SERVE, detach=True, name="pyone", hostname="pyone", network="labpynet")
        try:
            started = run_labctl("run", "-d", "--name", "cli-two", "--network", "labpynet", "busybox", "sleep", "600")
            assert started.returncode == 0, started.stderr
            one, two = store.find("pyone").pid, store.find("cli-two").pid
            assert ipaddress.IPv4Address(address(one)) in subnet and ipaddress.IPv4Address(address(two)) in subnet
            assert host_master_of_peer(one) == bridge == host_master_of_peer(two)
            assert connect(two, address(one)) == "ok hi-from-pyone"
            net.reload()
            assert set(net.attrs["Containers"]) == {store.find("pyone").id, store.find("cli-two").id}
        finally:
            box.remove(force=True)
            run_labctl("rm", "-f", "cli-two")
    finally:
        net.remove()
        client.close()
    assert not link_exists(bridge)
