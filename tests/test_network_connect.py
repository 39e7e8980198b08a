"""`docker network connect|disconnect NET CONTAINER` through labctl's daemon (POST /networks/{id}/connect,
/disconnect), with Debian's docker CLI, docker-py and `labctl network connect|disconnect`.

What the tests believe: the kernel. The new interface and its address as `ip` reads them inside the
container's network namespace (nsenter -n), the host end's master (the network's bridge), TCP and ping
from inside one container to another on that network, and the links left once it has been disconnected
or removed. The daemon's event stream is read for the connect and disconnect events."""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time

import pytest

from helpers import run_labctl
from labctl.containers import store
from labctl.demos import daemonrun
from test_daemon import DOCKER, daemon, docker  # noqa: F401  (daemon: the module's fixture)
from test_daemon_networks import SERVE, connect, link_exists, network

pytestmark = [pytest.mark.root, pytest.mark.skipif(not os.path.exists(DOCKER),
                                                   reason="needs Debian's docker CLI (apt-get install docker.io)")]


def links(pid: int) -> dict[str, dict]:
    """{ifname: link with its addresses} inside the process's network namespace, as `ip -j addr` reads it."""
    out = subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "-j", "addr"], capture_output=True, text=True,
                         check=True).stdout
    return {link["ifname"]: link for link in json.loads(out)}


def inet(link: dict) -> str:
    return next(a["local"] for a in link["addr_info"] if a["family"] == "inet")


def master_of(link: dict) -> str | None:
    host = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout)
    return next((h.get("master") for h in host if h["ifindex"] == link["link_index"]), None)


def on_bridge(bridge: str) -> list[str]:
    out = subprocess.run(["ip", "-j", "link", "show", "master", bridge], capture_output=True, text=True).stdout
    return [link["ifname"] for link in json.loads(out or "[]")]


def test_docker_network_connect_and_disconnect_a_running_container(daemon):
    since = time.time() - 1
    assert docker(daemon, "network", "create", "labcon").returncode == 0
    net = network(daemon, "labcon")
    bridge, subnet = net["Options"]["com.docker.network.bridge.name"], ipaddress.IPv4Network(net["IPAM"]["Config"][0]["Subnet"])
    try:
        for box, where in (("consrv", "labcon"), ("concli", "bridge")):
            run = docker(daemon, "run", "-d", "--name", box, "--hostname", box, "--network", where, "busybox", *SERVE)
            assert run.returncode == 0, run.stderr
        srv, cli = store.find("consrv").pid, store.find("concli").pid
        target = inet(links(srv)["eth0"])
        assert set(links(cli)) == {"lo", "eth0"} and connect(cli, target) == "timeout"   # not on it yet
        joined = docker(daemon, "network", "connect", "labcon", "concli")
        assert joined.returncode == 0, joined.stderr
        eth1 = links(cli)["eth1"]
        assert ipaddress.IPv4Address(inet(eth1)) in subnet and master_of(eth1) == bridge
        assert connect(cli, target) == "ok hi-from-consrv"                        # TCP over the new link
        ping = docker(daemon, "exec", "concli", "ping", "-c", "1", "-W", "2", target)
        assert ping.returncode == 0 and "1 packets received" in ping.stdout, ping.stdout + ping.stderr
        cid = store.find("concli").id
        assert cid in network(daemon, "labcon")["Containers"]
        [inspected] = json.loads(docker(daemon, "inspect", "concli").stdout)
        assert inspected["NetworkSettings"]["Networks"]["labcon"]["IPAddress"] == inet(eth1)
        assert "eth0" in links(cli) and len(on_bridge(bridge)) == 2
        left = docker(daemon, "network", "disconnect", "labcon", "concli")
        assert left.returncode == 0, left.stderr
        assert set(links(cli)) == {"lo", "eth0"} and len(on_bridge(bridge)) == 1    # the veth pair is gone
        assert connect(cli, target) in ("timeout", "error 101")
        again = docker(daemon, "network", "disconnect", "labcon", "concli")
        assert again.returncode == 1 and "is not on network labcon" in again.stderr, again.stderr
        events = [(e["Action"], e["Actor"]["Attributes"].get("container")) for e in daemonrun.events(daemon, since)
                  if e.get("Type") == "network" and e["Action"] in ("connect", "disconnect")]
        assert events == [("connect", cid), ("disconnect", cid)]
        assert docker(daemon, "network", "connect", "labcon", "concli").returncode == 0   # connected when removed:
    finally:
        docker(daemon, "rm", "-f", "consrv", "concli")
        assert on_bridge(bridge) == []                                      # rm took both veths
        docker(daemon, "network", "rm", "labcon")
    assert not link_exists(bridge)


def test_docker_py_and_labctl_network_connect(daemon):
    docker_py = pytest.importorskip("docker")
    client = docker_py.DockerClient(base_url=f"unix://{daemon}", version="1.41")
    net = client.networks.create("labpycon", driver="bridge")
    bridge = net.attrs["Options"]["com.docker.network.bridge.name"]
    try:
        srv = client.containers.run("busybox", SERVE, detach=True, name="pyconsrv", hostname="pyconsrv",
                                    network="labpycon")
        cli = client.containers.run("busybox", ["sleep", "600"], detach=True, name="pyconcli", network="bridge")
        try:
            pid, target = store.find("pyconcli").pid, inet(links(store.find("pyconsrv").pid)["eth0"])
            net.connect(cli)                                                  # docker-py
            assert master_of(links(pid)["eth1"]) == bridge and connect(pid, target) == "ok hi-from-pyconsrv"
            gone = run_labctl("network", "disconnect", "labpycon", "pyconcli")  # labctl, the same function
            assert gone.returncode == 0, gone.stderr
            assert "eth1" not in links(pid)
            came = run_labctl("network", "connect", "labpycon", "pyconcli")
            assert came.returncode == 0 and "eth1" in came.stdout, came.stdout + came.stderr
            assert connect(pid, target) == "ok hi-from-pyconsrv"
            net.disconnect(cli)
            assert "eth1" not in links(pid) and len(on_bridge(bridge)) == 1
            refused = run_labctl("network", "connect", "host", "pyconcli")
            assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        finally:
            srv.remove(force=True)
            cli.remove(force=True)
    finally:
        net.remove()
        client.close()
