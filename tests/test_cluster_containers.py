"""Step 13, phase 2: containers on overlay networks (labctl/cluster/endpoint.py, agent.py).

What the tests believe: the kernel (a container's eth0 address and MAC read over netlink inside its
own network namespace, by PID 1's /proc/PID/ns/net; the FDB entries of each host's VXLAN device;
/proc/PID/cgroup), real TCP between containers on two hosts, by address and by name, and etcd itself
read with etcdctl. Never what labctl printed about them.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import run_labctl
from test_cluster import (NOTHING, RUN, TTL, cluster, cluster_objects, etcdctl, pid_of, pytestmark,  # noqa: F401
                          registered)
from test_cluster_overlay import cluster3, overlay_networks, stored  # noqa: F401
from labctl.network.netlink import iproute

SERVER = "while true; do echo pong | nc -l -p 80; done"


def docker(host: int, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "-H", f"unix://{RUN / f'host{host}.sock'}", *args], capture_output=True,
                          text=True, timeout=timeout)


def run(host: int, name: str, *command: str, network: str = "web") -> int:
    """`docker run -d --network NETWORK --name NAME busybox COMMAND` on the host; PID 1's PID."""
    ran = docker(host, "run", "-d", "--network", network, "--name", name, "busybox", *command)
    assert ran.returncode == 0, ran.stderr
    return int(docker(host, "inspect", "-f", "{{.State.Pid}}", name).stdout)


def eth0(pid: int) -> tuple[str, str, int]:
    """(address, MAC, prefix length) of eth0 in PID's network namespace, as the kernel has them."""
    with iproute(f"/proc/{pid}/ns/net") as ns:
        index = ns.link_lookup(ifname="eth0")[0]
        link = ns.link("get", index=index)[0]
        addr = ns.addr("dump", index=index)[0]
        return addr.get_attr("IFA_ADDRESS"), link.get_attr("IFLA_ADDRESS"), addr["prefixlen"]


def fdb(host: int, network: str = "web") -> dict[str, str]:
    """{MAC: underlay address} of the host's VXLAN device for the network (its remote endpoints)."""
    vni = overlay_networks()[network]["vni"]
    with iproute(f"lab-host{host}-ov{vni}") as ns:
        vx = ns.link_lookup(ifname=f"labvx{vni}")[0]
        return {e.get_attr("NDA_LLADDR"): e.get_attr("NDA_DST") for e in ns.fdb("dump", ifindex=vx)
                if e.get_attr("NDA_DST")}


def hosts_dir():
    from labctl.cluster import cluster_dir
    return cluster_dir()


def wait_for(predicate, timeout: float) -> float:
    started = time.monotonic()
    while not predicate() and time.monotonic() - started < timeout:
        time.sleep(0.02)
    assert predicate(), f"not true after {timeout} s"
    return time.monotonic() - started


def stuck(*pids: int) -> str:
    """What the kernel says of the containers' processes (for a failure's message): each one's command,
    state and wait channel, and the client's /etc/hosts."""
    lines = [f"/etc/hosts of PID {pids[0]}: {open(f'/proc/{pids[0]}/root/etc/hosts').read()!r}"]
    rings = {os.readlink(f"/proc/{p}/ns/pid"): p for p in pids}
    for proc in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if proc.isdigit() and os.readlink(f"/proc/{proc}/ns/pid") in rings:
                cmd = open(f"/proc/{proc}/cmdline").read().replace("\0", " ")
                stat = open(f"/proc/{proc}/stat").read().rsplit(")", 1)[1].split()[0]
                lines.append(f"{proc} [{stat}, {open(f'/proc/{proc}/wchan').read()}] {cmd}")
    return "\n".join(lines)


def test_containers_on_two_hosts_talk_tcp_by_address_and_by_name(cluster):
    assert docker(1, "network", "create", "-d", "overlay", "web").returncode == 0
    server = run(1, "srv", "sh", "-c", SERVER)
    client = run(2, "cli", "sleep", "1000")
    (srv_ip, srv_mac, plen), (cli_ip, _, _) = eth0(server), eth0(client)
    subnet = overlay_networks()["web"]["subnet"]
    assert srv_ip != cli_ip and plen == int(subnet.split("/")[1]) and srv_ip.startswith(subnet.rsplit(".", 2)[0])
    assert srv_mac == "02:42:" + ":".join(f"{int(b):02x}" for b in srv_ip.split("."))
    wait_for(lambda: fdb(2).get(srv_mac) == "10.206.0.1", 5)   # host2 sends srv's frames to host1
    for target in (srv_ip, "srv"):
        try:
            got = docker(2, "exec", "cli", "nc", "-w", "5", target, "80", timeout=45)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"`docker exec cli nc {target} 80` did not end: {stuck(client, server)}") from None
        assert got.returncode == 0 and got.stdout == "pong\n", (target, got.stdout, got.stderr)
    refused = docker(1, "run", "-d", "-p", "8080:80", "--network", "web", "busybox", "true")
    assert refused.returncode != 0 and "published ports need a bridge network" in refused.stderr
    with open(f"/proc/{server}/cgroup") as f:   # the host's prefix on its containers' cgroups
        assert "/labctl-host1-" in f.read()
    # names are per host: a second container named srv, on host2, is another one with its own cgroup
    other = run(2, "srv", "sleep", "1000", network="none")
    with open(f"/proc/{other}/cgroup") as f:
        assert "/labctl-host2-" in f.read()


def test_twenty_containers_started_at_once_on_three_hosts_get_twenty_addresses(cluster3):
    assert docker(1, "network", "create", "-d", "overlay", "web").returncode == 0
    with ThreadPoolExecutor(20) as pool:
        pids = list(pool.map(lambda i: run(1 + i % 3, f"c{i}", "sleep", "1000"), range(20)))
    found = [eth0(pid) for pid in pids]
    assert len({address for address, _, _ in found}) == 20, found
    assert len({mac for _, mac, _ in found}) == 20
    # every host's VXLAN device knows the endpoints of the other two hosts (its watch), and only those
    for host in (1, 2, 3):
        theirs = {mac: f"10.206.0.{1 + i % 3}" for i, (_, mac, _) in enumerate(found) if 1 + i % 3 != host}
        with contextlib.suppress(AssertionError):
            wait_for(lambda: fdb(host) == theirs, 10)
        assert fdb(host) == theirs, (host, open(f"{hosts_dir()}/host{host}/daemon.log").read()[-3000:])
    ping = docker(3, "exec", "c2", "ping", "-c", "1", "-W", "3", found[0][0])   # host3 → host1
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_a_killed_daemons_endpoints_leave_the_other_hosts_fdb_after_its_lease(cluster):
    assert docker(1, "network", "create", "-d", "overlay", "web").returncode == 0
    run(1, "ca", "sleep", "1000")
    _, mac, _ = eth0(run(2, "cb", "sleep", "1000"))
    wait_for(lambda: mac in fdb(1), 5)
    os.kill(pid_of(RUN / "host2.pid"), signal.SIGKILL)
    killed = time.monotonic()
    assert mac in fdb(1)   # the lease runs on: etcd does not know yet
    took = wait_for(lambda: mac not in fdb(1), TTL + 5)
    assert took <= TTL + 2, took
    assert not [k for k, v in stored("/labctl/overlay/ip/web/").items() if json.loads(v)["host"] == "host2"]
    print(f"host2's endpoint left host1's FDB {time.monotonic() - killed:.1f} s after SIGKILL (TTL {TTL} s)")


def test_a_daemon_started_again_reconciles_its_fdb_with_etcd(cluster):
    from labctl.cluster import Host, hosts
    assert docker(1, "network", "create", "-d", "overlay", "web").returncode == 0
    run(1, "ca", "sleep", "1000")
    _, mac, _ = eth0(run(2, "cb", "sleep", "1000"))
    wait_for(lambda: mac in fdb(1), 5)
    kill_daemon(1)
    vni = overlay_networks()["web"]["vni"]
    stale = "02:42:0a:cf:63:63"   # an endpoint etcd never had, and b's entry removed while no one watched
    for args in (["append", stale, "dev", f"labvx{vni}", "dst", "10.206.0.3"], ["del", mac, "dev", f"labvx{vni}"]):
        subprocess.run(["ip", "netns", "exec", f"lab-host1-ov{vni}", "bridge", "fdb", *args], check=True)
    assert fdb(1) == {stale: "10.206.0.3"}
    hosts.start_daemon(Host(1), TTL)
    wait_for(lambda: fdb(1) == {mac: "10.206.0.2"}, 10)


def test_cluster_down_leaves_no_container_link_or_cgroup(cluster3):
    assert docker(1, "network", "create", "-d", "overlay", "web").returncode == 0
    pids = [run(h, f"c{h}", "sleep", "1000") for h in (1, 2, 3)]
    starts = [open(f"/proc/{p}/stat").read() for p in pids]
    down = run_labctl("cluster", "down")
    assert down.returncode == 0, down.stderr
    assert cluster_objects() == NOTHING
    for pid, start in zip(pids, starts):
        try:
            assert open(f"/proc/{pid}/stat").read() != start
        except FileNotFoundError:
            pass
    with iproute() as ipr:
        assert not [m.get_attr("IFLA_IFNAME") for m in ipr.link("dump") if m.get_attr("IFLA_IFNAME").startswith("labv")]
    leftovers = subprocess.run(["find", "/sys/fs/cgroup", "-name", "labctl-host*"], capture_output=True, text=True)
    assert leftovers.stdout == ""


def leases(prefix: str, field: str = "lease") -> dict[str, int]:
    """{key: the lease it lives on} under prefix, as etcd has them (or another field: create_revision)."""
    out = etcdctl("get", "--prefix", prefix, "-w", "json")
    assert out.returncode == 0, out.stderr
    return {base64.b64decode(kv["key"]).decode(): int(kv.get(field, 0)) for kv in json.loads(out.stdout).get("kvs", [])}


def kill_daemon(host: int) -> None:
    """SIGKILL the host's daemon and wait until it has ended: kill(2) returns before the process is gone,
    and a daemon started again meanwhile would find its predecessor still running."""
    pid = pid_of(RUN / f"host{host}.pid")
    fd = os.pidfd_open(pid)
    try:
        os.kill(pid, signal.SIGKILL)
        assert select.select([fd], [], [], 10)[0], f"host{host}'s daemon (PID {pid}) did not end after SIGKILL"
    finally:
        os.close(fd)


def ca_and_cb() -> tuple[str, str, str]:
    """Network web, container ca on host1 and cb on host2, cb's MAC in host1's FDB: cb's address, MAC
    and endpoint key."""
    assert docker(1, "network", "create", "-d", "overlay", "web").returncode == 0
    run(1, "ca", "sleep", "1000")
    address, mac, _ = eth0(run(2, "cb", "sleep", "1000"))
    wait_for(lambda: mac in fdb(1), 5)
    return address, mac, f"/labctl/overlay/ip/web/{address}"


def test_a_daemon_killed_and_started_again_keeps_its_containers_endpoints_past_the_old_lease(cluster):
    from labctl.cluster import Host, hosts
    address, mac, key = ca_and_cb()
    old = leases(key)[key]
    kill_daemon(2)
    hosts.start_daemon(Host(2), TTL)   # live restore: cb runs on; the new daemon takes a new lease
    wait_for(lambda: leases(key).get(key) not in (None, old), TTL)
    new = leases(key)[key]
    assert new == registered()["/labctl/hosts/host2"]["lease"], "the endpoint lives on host2's new lease"
    time.sleep(TTL + 1)                # the old lease has expired by now: the key and the FDB entry stay
    assert leases(key) == {key: new} and fdb(1).get(mac) == "10.206.0.2"
    ping = docker(1, "exec", "ca", "ping", "-c", "1", "-W", "3", address)
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_a_lease_that_expired_under_a_live_daemon_has_its_endpoints_put_again(cluster):
    address, mac, key = ca_and_cb()
    old, created = registered()["/labctl/hosts/host2"]["lease"], leases(key, "create_revision")[key]
    # what etcd does to a lease nobody refreshed in time (etcd away longer than the TTL): revoked, keys gone
    revoked = etcdctl("lease", "revoke", f"{old:x}")
    assert revoked.returncode == 0, revoked.stderr
    wait_for(lambda: leases(key).get(key) not in (None, old), TTL + 3)   # host2's keepalive answered 0: put again
    assert leases(key)[key] == registered()["/labctl/hosts/host2"]["lease"] != old
    assert leases(key, "create_revision")[key] > created, "the key was deleted with the lease and made again"
    wait_for(lambda: fdb(1).get(mac) == "10.206.0.2", 5)   # host1's watch: the DELETE, then the PUT
    ping = docker(1, "exec", "ca", "ping", "-c", "1", "-W", "3", address)
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_an_overlay_network_in_use_is_not_removed(cluster):
    assert docker(1, "network", "create", "-d", "overlay", "web").returncode == 0
    _, mac, _ = eth0(run(2, "cb", "sleep", "1000"))
    before = stored("/labctl/")
    refused = docker(1, "network", "rm", "web")   # from the other host: the store knows host2's endpoint
    assert refused.returncode != 0 and "has active endpoints: cb on host2" in refused.stderr, refused.stderr
    cli = run_labctl("network", "rm", "-d", "overlay", "web")
    assert cli.returncode != 0 and "active endpoints" in cli.stderr and len(cli.stderr.strip().splitlines()) <= 2
    assert stored("/labctl/") == before
    inspected = json.loads(docker(2, "network", "inspect", "web").stdout)[0]["Containers"]
    assert [(c["Name"], c["MacAddress"]) for c in inspected.values()] == [("cb", mac)]   # eth0's, from the kernel
    assert json.loads(docker(2, "inspect", "cb").stdout)[0]["NetworkSettings"]["Networks"]["web"]["MacAddress"] == mac
    assert docker(2, "rm", "-f", "cb").returncode == 0
    assert docker(1, "network", "rm", "web").returncode == 0 and "web" not in overlay_networks()


def test_etcd_killed_and_started_again_while_containers_run_loses_no_endpoint_and_the_watches_resume(cluster):
    from labctl.cluster import etcd
    address, mac, key = ca_and_cb()
    before = stored("/labctl/overlay/ip/web/")
    os.kill(etcd.running()["pid"], signal.SIGKILL)   # a crash: the data directory stays
    wait_for(lambda: not etcd.running(), 5)
    time.sleep(TTL)                                    # the daemons' keepalives and watches fail meanwhile
    etcd.start()
    time.sleep(TTL * 2)                                # longer than a lease: only what was kept alive is there
    assert stored("/labctl/overlay/ip/web/") == before, "both containers' endpoints are still in etcd"
    assert leases(key)[key] == registered()["/labctl/hosts/host2"]["lease"]
    assert fdb(1).get(mac) == "10.206.0.2"
    ping = docker(1, "exec", "ca", "ping", "-c", "1", "-W", "3", address)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    # the watches opened again: a container started now on host2 is programmed on host1
    new_address, new_mac, _ = eth0(run(2, "cc", "sleep", "1000"))
    assert f"/labctl/overlay/ip/web/{new_address}" not in before
    wait_for(lambda: fdb(1).get(new_mac) == "10.206.0.2", 10)


def learned(host: int, network: str = "web") -> set[str]:
    """The MACs host's overlay bridge learned on its VXLAN port (bridge entries, not the device's own)."""
    vni = overlay_networks()[network]["vni"]
    with iproute(f"lab-host{host}-ov{vni}") as ns:
        vx = ns.link_lookup(ifname=f"labvx{vni}")[0]
        return {e.get_attr("NDA_LLADDR") for e in ns.fdb("dump", ifindex=vx)
                if e.get_attr("NDA_MASTER") and not e["state"] & 0x80}   # the bridge's; not NUD_PERMANENT


def test_an_endpoint_that_left_leaves_no_entry_the_other_hosts_bridge_learned(cluster):
    """Without it the bridge keeps the MAC on its VXLAN port for its ageing time (300 s): a container
    that gets the address on this host meanwhile would have its frames sent into the tunnel."""
    assert docker(1, "network", "create", "-d", "overlay", "web").returncode == 0
    ca_ip, _, _ = eth0(run(1, "ca", "sleep", "1000"))
    _, cb_mac, _ = eth0(run(2, "cb", "sleep", "1000"))
    wait_for(lambda: cb_mac in fdb(1), 5)
    ping = docker(2, "exec", "cb", "ping", "-c", "1", "-W", "3", ca_ip)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert cb_mac in learned(1)   # host1's bridge learned cb on the VXLAN port from the echo request
    assert docker(2, "rm", "-f", "cb").returncode == 0
    wait_for(lambda: cb_mac not in fdb(1), 5)
    assert cb_mac not in learned(1)
