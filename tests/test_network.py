"""Step 6: container networking, judged by netlink (links, masters, addresses, routes), nftables and
real TCP connections. All traffic stays between the lab's own namespaces and loopback.

The tests use their own bridge (labtest6) and subnets (10.203.66.0/24, upstream 10.204.66.0/30), so
they never meet lab0 or another helper's networks on a shared machine.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import run_labctl, student_lab
from labctl import network, state
from labctl.demos import nettool
from labctl.demos.network import NetContainer, nettool_argv, start_container
from labctl.errors import LabError
from labctl.kernel.syscalls import namespace_inode

pytestmark = pytest.mark.root

NET = network.Network("labtest6", "10.203.66.0/24")
UPSTREAM_SUBNET = "10.204.66.0/30"
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sleeper(name: str, mode: str = "bridge", **kw) -> NetContainer:
    return start_container(["sleep", "60"], name, mode, network=NET, **kw)


def server(name: str, **kw) -> NetContainer:
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        return start_container(nettool_argv("serve", "--port", "80"), name, network=NET,
                                       stdout=devnull, **kw)
    finally:
        os.close(devnull)


def run_client(name: str, *args: str) -> tuple[dict, str]:
    """A container running the lab's TCP client; returns what it printed (JSON) and its address."""
    read_fd, write_fd = os.pipe()
    try:
        with start_container(nettool_argv(*args), name, network=NET, stdout=write_fd) as client:
            os.close(write_fd)
            write_fd = -1
            assert client.proc.wait(timeout=20) == 0
            return json.loads(os.read(read_fd, 1 << 20)), client.address
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


def test_veth_peer_is_eth0_inside_with_address_and_default_route():
    with sleeper("lab-t6-a") as box:
        host_end = network.link_stats(box.attachment.host_link)
        assert host_end.kind == "veth" and host_end.master == NET.bridge and host_end.state == "UP"
        bridge = network.link_stats(NET.bridge)
        assert bridge.kind == "bridge" and bridge.addresses == [f"{NET.gateway}/24"]
        inside = {link.name: link for link in network.links(box.pid)}
        assert set(inside) == {"lo", "eth0"}
        assert inside["eth0"].addresses == [f"{box.address}/24"] and inside["eth0"].state == "UP"
        assert inside["lo"].addresses == ["127.0.0.1/8"]
        assert f"default via {NET.gateway} dev eth0" in network.routes(box.pid)
        assert network.ip_forwarding(NET.bridge)
        forward = [o["rule"] for o in network.nft_table_json(NET.table) if "rule" in o and o["rule"]["chain"] == "forward"]
        # other lab bridges (networks are isolated), then links not the lab's: both dropped
        assert [r["expr"][-1] for r in forward] == [{"drop": None}, {"drop": None}]
        hosts = box.attachment.etc_text()["/etc/hosts"]
        assert f"{box.address}\tlab-t6-a" in hosts
        assert box.attachment.etc_text()["/etc/hostname"] == "lab-t6-a\n"


def test_container_to_container_tcp_over_the_bridge():
    with server("lab-t6-srv") as srv:
        answer, client_address = run_client("lab-t6-cli", "whoami", srv.address, "80")
        # The server saw the client's own address: inside the bridge there is no NAT.
        assert answer["seen_as"].split(":")[0] == client_address != srv.address
        rtt, _ = run_client("lab-t6-cli2", "rtt", srv.address, "80", "--count", "20")
        assert len(rtt["rtt_us"]) == 20 and rtt["median_us"] > 0


def test_host_reaches_a_published_port_on_loopback_and_on_the_bridge_address():
    port = free_port()
    with server("lab-t6-pub", publish=[f"{port}:80"]) as srv:
        rules = network.nft_table_text(NET.table)
        assert any(f"dport {port} dnat to {srv.address}:80" in line for line in rules)
        # 127.0.0.1 needs output-chain DNAT, route_localnet and masquerade: the container sees the bridge.
        assert nettool.whoami("127.0.0.1", port).split(":")[0] == NET.gateway
        assert nettool.whoami(NET.gateway, port).split(":")[0] == NET.gateway
    assert not any(f"dport {port}" in line for line in network.nft_table_text(NET.table))


def test_nat_makes_container_traffic_come_from_the_hosts_address_upstream():
    with network.create_upstream("lab-t6-upstream", UPSTREAM_SUBNET) as up, \
            nettool.Server(nettool.listen("0.0.0.0", 7, lambda: network.socket_in_netns(up.netns))):
        assert network.routes(up.netns) == [f"{UPSTREAM_SUBNET} dev eth0"]  # no route back to containers
        with sleeper("lab-t6-nat") as box:
            seen = network.in_netns(box.pid, nettool.whoami, up.address, 7)
            assert seen.split(":")[0] == up.host_address
            assert box.address != up.host_address


def test_upstream_reaches_a_published_port_through_prerouting_dnat():
    port = free_port()
    with network.create_upstream("lab-t6-upstream", UPSTREAM_SUBNET) as up, \
            server("lab-t6-web", publish=[f"{port}:80"]):
        # From another namespace the packet passes prerouting: no masquerade, the container sees upstream.
        seen = network.in_netns(up.netns, nettool.whoami, up.host_address, port)
        assert seen.split(":")[0] == up.address


def test_an_attachment_can_be_detached_from_its_saved_description():
    from labctl.kernel import namespaces
    proc = namespaces.spawn(["sleep", "60"], namespaces=("net",), start=False)
    try:
        att = network.attach(proc.pid, "lab-t6-saved", network=NET, publish=["28767:80"])
        saved = json.loads(json.dumps(att.to_dict()))
        assert network.link_stats(att.host_link).master == NET.bridge
        network.Attachment.from_dict(saved).detach()
        assert network.link_stats(att.host_link) is None and network.link_stats(NET.bridge) is None
        assert network.allocations(NET) == {}
    finally:
        proc.kill()


def test_check_fails_on_a_half_done_exercise(tmp_path):
    """TODOs 1-3 done (the reference part), 4 and 5 not."""
    half = [("        configure_inside(ns, peer, address, prefixlen)\n        add_default_route(ns, gateway)",
             "        pass")]
    result = run_labctl("check", "6", env=student_lab(tmp_path, take=[6], edits={"network.py": half}))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no eth0 in the namespace" in result.stdout and "TODO 4" in result.stdout


def test_none_mode_has_only_loopback():
    with sleeper("lab-t6-none", mode="none") as box:
        assert box.attachment.address is None
        inside = network.links(box.pid)
        assert [(l.name, l.state, l.addresses) for l in inside] == [("lo", "UNKNOWN", ["127.0.0.1/8"])]
        assert network.routes(box.pid) == []
        assert "\nnameserver" not in "\n" + box.attachment.etc_text()["/etc/resolv.conf"]


def test_host_mode_shares_the_hosts_network_namespace():
    with sleeper("lab-t6-host", mode="host") as box:
        assert namespace_inode(box.pid, "net") == namespace_inode("self", "net")
        assert namespace_inode(box.pid, "uts") != namespace_inode("self", "uts")
        assert box.attachment.host_link is None
        assert not network.link_stats(NET.bridge)  # host mode creates no bridge


def test_network_ls_lists_the_bridge_and_its_containers():
    with sleeper("lab-t6-ls") as box:
        result = run_labctl("network", "ls", env={**os.environ, "LABCTL_BRIDGE": NET.bridge,
                                                  "LABCTL_SUBNET": NET.subnet})
        assert result.returncode == 0, result.stderr
        assert NET.bridge in result.stdout and f"lab-t6-ls={box.address}" in result.stdout


@pytest.mark.root(False)
def test_modes_refuse_the_wrong_namespace_and_bad_ports():
    with pytest.raises(LabError, match="unknown network mode"):
        network.attach(os.getpid(), "x", mode="overlay")
    with pytest.raises(LabError, match="shares the host's network namespace"):
        network.attach(os.getpid(), "x", mode="bridge", network=NET)
    with pytest.raises(LabError, match="bad published port"):
        network.PortMapping.parse("80:http")
    assert network.PortMapping.parse("8080:80") == network.PortMapping(8080, 80, "tcp")
    assert network.PortMapping.parse("53/udp") == network.PortMapping(53, 53, "udp")


def test_one_parser_reads_every_form_of_a_published_port():
    from labctl.containers import spec
    PortMapping = network.PortMapping
    assert PortMapping.parse("127.0.0.1:8080:80") == PortMapping(8080, 80, "tcp", "127.0.0.1")
    assert PortMapping.parse("10.0.0.1:5353:53/udp") == PortMapping(5353, 53, "udp", "10.0.0.1")
    for mapping in (PortMapping(8080, 80), PortMapping(5353, 53, "udp", "10.0.0.1")):
        assert PortMapping.parse(str(mapping)) == mapping   # what an Attachment's to_dict() stores
    for bad in ("80:http", "foo:8080:80", "1:2:3:4", "0:80", "8080:70000", "8080:80/sctp", ""):
        with pytest.raises(LabError, match="bad published port"):
            spec.parse_port(bad)   # the container spec's -p is the same parser
    stored = spec.ContainerSpec("busybox", ["true"], [], "/", "", "h", ports=[spec.parse_port("8080:80")])
    assert spec.ContainerSpec.from_json(json.loads(json.dumps(stored.to_json()))).ports == [PortMapping(8080, 80)]


def test_the_cli_offers_the_modes_attach_accepts():
    help_text = run_labctl("run", "--help").stdout
    assert f"{', '.join(network.MODES)} (default: none)" in " ".join(help_text.split())
    with pytest.raises(LabError, match="published ports need network mode bridge"):
        network.check_mode("none", ["8080:80"])


WORKER = """
import json, sys
from labctl import network
from labctl.demos.network import start_container
net = network.Network("labtest6", "10.203.66.0/24")
box = start_container(["sleep", "60"], sys.argv[1], network=net)
print(json.dumps({"pid": box.pid, "address": box.address, "host_link": box.attachment.host_link}), flush=True)
sys.stdin.read()
box.stop()
"""


def test_twenty_concurrent_containers_get_twenty_distinct_addresses():
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, f"lab-t6-c{i}"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, cwd=REPO) for i in range(20)]
    try:
        boxes = [json.loads(w.stdout.readline()) for w in workers]
        addresses = [b["address"] for b in boxes]
        assert len(set(addresses)) == 20
        for box in boxes:  # what the kernel says inside each namespace, not what the workers printed
            eth0 = [l for l in network.links(box["pid"]) if l.name == "eth0"][0]
            assert eth0.addresses == [f"{box['address']}/24"]
            assert network.link_stats(box["host_link"]).master == NET.bridge
        assert len(network.allocations(NET)) == 20
    finally:
        for w in workers:
            w.stdin.close()
        for w in workers:
            assert w.wait(timeout=60) == 0
    assert network.link_stats(NET.bridge) is None
    assert not [l for l in network.links(prefix="labv")
                if l.master == NET.bridge or l.name in {b["host_link"] for b in boxes}]
    assert network.nft_table_json(NET.table) is None
    assert network.allocations(NET) == {}


CHURN = """
import sys
from labctl import network
from labctl.demos.network import start_container
net = network.Network("labtest6", "10.203.66.0/24")
print("started", flush=True)
while True:
    up = network.create_upstream("lab-t6-churn", "10.204.66.4/30")
    box = start_container(["sleep", "60"], "lab-t6-churn", publish=["28766:80"], network=net)
    box.stop()
    up.remove()
"""


def test_sigkill_mid_setup_then_cleanup_removes_everything():
    worker = subprocess.Popen([sys.executable, "-c", CHURN], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert worker.stdout.readline() == "started\n"
    time.sleep(2.5)  # pyroute2 imported; now somewhere in the middle of creating or removing objects
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert state.records()  # it died with objects recorded: cleanup has work to do
    result = run_labctl("cleanup")
    assert result.returncode == 0, result.stdout + result.stderr
    assert network.link_stats(NET.bridge) is None
    assert network.links(prefix="labv") == [] or all(l.master != NET.bridge for l in network.links(prefix="labv"))
    assert not os.path.exists("/run/netns/lab-t6-churn")
    assert network.nft_table_json(NET.table) is None
    assert state.records() == []


def test_attaching_twice_is_one_clear_error():
    with sleeper("lab-t6-twice") as box:
        with pytest.raises(LabError, match="refused"):
            network.attach(box.pid, "lab-t6-twice2", network=NET)
        assert len(network.allocations(NET)) == 1  # the failed attempt gave its address back


def test_check_fails_on_the_skeleton():
    result = run_labctl("check", "6")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "TODO 1" in result.stdout


def test_check_passes_on_the_reference():
    result = run_labctl("check", "6", "--reference")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS" in result.stdout


def test_check_passes_on_a_completed_exercise(tmp_path):
    """The student's step 6 part (the reference part, taken as `labctl lab take 6` does)."""
    result = run_labctl("check", "6", env=student_lab(tmp_path, take=[6]))
    assert result.returncode == 0, result.stdout + result.stderr


def test_step_6_demo_runs():
    env = {**os.environ, "LABCTL_BRIDGE": "labtest6d", "LABCTL_SUBNET": "10.203.67.0/24"}
    result = run_labctl("step", "6", "--no-explain", timeout=60, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "NAT" in result.stdout
