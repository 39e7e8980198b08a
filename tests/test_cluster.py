"""Step 13, phase 1: `labctl cluster up|down|status`, lab hosts as network namespaces joined by an
underlay, each with its own daemon, registered in etcd with a lease.

What the tests believe: the kernel (the namespaces in /run/netns, the links and addresses read over
netlink inside each namespace, which namespace a process is in by /proc/PID/ns/net, a real ICMP ping
and a real TCP connection between two hosts), the docker CLI's exit code and output from each host's
daemon, and etcd itself, read with Debian's etcdctl (not with the lab's client).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from helpers import run_labctl
from labctl import state
from labctl.network.netlink import iproute
from labctl.network.netns import in_netns, socket_in_netns

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not shutil.which("etcd") or not shutil.which("etcdctl"),
                                 reason="needs etcd-server and etcd-client (apt-get install etcd-server etcd-client)")]
RUN = Path("/run/labctl/cluster")
TTL = 3


def etcdctl(*args: str) -> subprocess.CompletedProcess:
    """Debian's etcdctl, run inside the underlay namespace against its 127.0.0.1."""
    return subprocess.run(["ip", "netns", "exec", "lab-underlay", "etcdctl", "--endpoints", "127.0.0.1:2379", *args],
                          capture_output=True, text=True, timeout=20)


def registered() -> dict[str, dict]:
    out = etcdctl("get", "--prefix", "/labctl/hosts/", "-w", "json")
    assert out.returncode == 0, out.stderr
    import base64
    kvs = json.loads(out.stdout).get("kvs", [])
    return {base64.b64decode(kv["key"]).decode(): {**json.loads(base64.b64decode(kv["value"])), "lease": kv.get("lease", 0)}
            for kv in kvs}


def netns_inode(name: str) -> int:
    return os.stat(f"/run/netns/{name}").st_ino


def pid_of(pid_file: Path) -> int:
    return json.loads(pid_file.read_text())["pid"]


def cluster_objects() -> dict:
    """What a cluster puts on the machine, as the kernel and the file system show it."""
    netns = {p.name for p in Path("/run/netns").iterdir()} if Path("/run/netns").is_dir() else set()
    with iproute() as ipr:
        links = {m.get_attr("IFLA_IFNAME") for m in ipr.link("dump")}
    etcds = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _is_our_etcd(p)]
    return {"netns": sorted(n for n in netns if n == "lab-underlay" or n.startswith("lab-host")),
            "links": sorted(n for n in links if n.startswith(("labu", "labup", "labul"))),
            "etcd": etcds, "run dir": RUN.exists(), "data dir": (state.state_dir() / "cluster").exists()}


def _is_our_etcd(proc: Path) -> bool:
    try:
        cmd = (proc / "cmdline").read_bytes().split(b"\0")
        return cmd[0].endswith(b"etcd") and str(state.state_dir() / "cluster").encode() in b" ".join(cmd) \
            and (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


NOTHING = {"netns": [], "links": [], "etcd": [], "run dir": False, "data dir": False}


@pytest.fixture
def cluster():
    """`labctl cluster up 2` with a short lease; `cluster down` at the end, which must leave nothing."""
    up = run_labctl("cluster", "up", "2", "--ttl", str(TTL))
    assert up.returncode == 0, up.stderr + up.stdout
    try:
        yield
    finally:
        down = run_labctl("cluster", "down")
        assert down.returncode == 0, down.stderr
        assert cluster_objects() == NOTHING


def test_two_hosts_reach_each_other_over_the_underlay(cluster):
    for n in (1, 2):
        with iproute(f"lab-host{n}") as ns:
            eth0 = ns.link("get", index=ns.link_lookup(ifname="eth0")[0])[0]
            addrs = [(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ns.addr("dump", index=eth0["index"])]
            assert eth0.get_attr("IFLA_OPERSTATE") == "UP" and addrs == [(f"10.206.0.{n}", 24)]
            assert not [r for r in ns.route("dump", family=socket.AF_INET, table=254) if r.get("dst_len") == 0], \
                "a host has no default route: the underlay leads nowhere but to the other hosts and etcd"
    with iproute("lab-underlay") as ns:
        bridge = ns.link_lookup(ifname="labul0")[0]
        # its own MAC, not its lowest port's: it stays as hosts join, so the hosts' ARP caches stay right
        assert ns.link("get", index=bridge)[0].get_attr("IFLA_ADDRESS") == "02:42:0a:ce:00:fe"
        assert sorted(m.get_attr("IFLA_IFNAME") for m in ns.link("dump") if m.get_attr("IFLA_MASTER") == bridge) \
            == ["labuh1", "labuh2"]
    for src, dst in ((1, 2), (2, 1)):
        ping = subprocess.run(["ip", "netns", "exec", f"lab-host{src}", "busybox", "ping", "-c", "1", "-W", "2",
                               f"10.206.0.{dst}"], capture_output=True, text=True)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        server = socket_in_netns(f"lab-host{dst}")
        with server:
            server.bind((f"10.206.0.{dst}", 0))
            server.listen()
            client = socket_in_netns(f"lab-host{src}")
            with client:
                client.settimeout(5)
                client.connect((f"10.206.0.{dst}", server.getsockname()[1]))
                conn, peer = server.accept()
                with conn:
                    client.sendall(b"hello")
                    assert conn.recv(5) == b"hello" and peer[0] == f"10.206.0.{src}"


def test_each_host_has_its_own_daemon_in_its_own_namespace(cluster):
    for n in (1, 2):
        sock = RUN / f"host{n}.sock"
        pid = pid_of(RUN / f"host{n}.pid")
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == netns_inode(f"lab-host{n}")
        assert os.stat(f"/proc/{pid}/ns/mnt").st_ino == os.stat("/proc/self/ns/mnt").st_ino   # not `ip netns exec`'s
        env = dict(os.environ, DOCKER_HOST=f"unix://{sock}")
        version = subprocess.run(["docker", "version", "--format", "{{.Server.Os}}"], env=env,
                                 capture_output=True, text=True, timeout=30)
        assert version.returncode == 0 and version.stdout.strip() == "linux", version.stderr
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: x\r\n\r\n")
            assert s.recv(4096).split(b" ", 2)[1] == b"200"
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert f"LABCTL_STATE_DIR={state.state_dir() / 'cluster' / f'host{n}'}".encode() in environ


def test_etcd_listens_only_in_the_underlay_and_both_hosts_are_registered(cluster):
    etcd = pid_of(state.state_dir() / "cluster" / "etcd.pid")
    assert os.stat(f"/proc/{etcd}/ns/net").st_ino == netns_inode("lab-underlay")
    listening = in_netns("lab-underlay", lambda: Path("/proc/thread-self/net/tcp").read_text())
    ports = {line.split()[1] for line in listening.splitlines()[1:] if line.split()[3] == "0A"}   # LISTEN
    # clients on 10.206.0.254:2379 and 127.0.0.1:2379, its own peer port on 127.0.0.1:2380; no 0.0.0.0
    assert ports == {"FE00CE0A:094B", "0100007F:094B", "0100007F:094C"}
    deadline = time.monotonic() + 10
    while len(registered()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    hosts = registered()
    assert {k: v["address"] for k, v in hosts.items()} == {"/labctl/hosts/host1": "10.206.0.1",
                                                             "/labctl/hosts/host2": "10.206.0.2"}
    for entry in hosts.values():
        ttl = etcdctl("lease", "timetolive", format(int(entry["lease"]), "x"))
        assert ttl.returncode == 0 and "granted with TTL(3s)" in ttl.stdout, ttl.stdout + ttl.stderr
    status = run_labctl("cluster", "status")
    assert status.returncode == 0 and "host1" in status.stdout and "host2" in status.stdout


def test_a_killed_daemons_key_vanishes_after_its_lease(cluster):
    deadline = time.monotonic() + 10
    while "/labctl/hosts/host2" not in registered() and time.monotonic() < deadline:
        time.sleep(0.2)
    pid = pid_of(RUN / "host2.pid")
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    assert "/labctl/hosts/host2" in registered()   # etcd cannot know yet: the lease runs on
    while "/labctl/hosts/host2" in registered() and time.monotonic() - killed < TTL + 5:
        time.sleep(0.2)
    gone_after = time.monotonic() - killed
    assert "/labctl/hosts/host2" not in registered() and gone_after <= TTL + 2, gone_after
    assert "/labctl/hosts/host1" in registered()   # the living host keeps its lease alive


def test_a_daemon_stopped_cleanly_revokes_its_lease_at_once(cluster):
    deadline = time.monotonic() + 10
    while "/labctl/hosts/host1" not in registered() and time.monotonic() < deadline:
        time.sleep(0.2)
    stopped = run_labctl("daemon", "stop", "--socket", str(RUN / "host1.sock"))
    assert stopped.returncode == 0, stopped.stderr
    assert "/labctl/hosts/host1" not in registered()   # SIGTERM: revoked before it exits, not a TTL later
    assert "/labctl/hosts/host2" in registered()


def test_cleanup_after_a_sigkilled_cluster_up_removes_everything():
    import sys
    up = subprocess.Popen([sys.executable, "-m", "labctl", "cluster", "up", "2"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (RUN / "host1.pid").exists() and time.monotonic() < deadline:   # mid-way: host1's daemon runs
        time.sleep(0.02)
    up.kill()
    up.wait()
    assert cluster_objects() != NOTHING   # what the crash left
    cleanup = run_labctl("cleanup")
    assert cleanup.returncode == 0, cleanup.stderr
    assert cluster_objects() == NOTHING


def test_cleanup_leaves_a_whole_running_cluster_and_all_removes_it():
    assert run_labctl("cluster", "up", "1").returncode == 0
    try:
        kept = run_labctl("cleanup")
        assert kept.returncode == 0 and "Left running: the lab cluster" in kept.stdout, kept.stdout + kept.stderr
        assert cluster_objects()["netns"] == ["lab-host1", "lab-underlay"] and cluster_objects()["etcd"]
        assert subprocess.run(["docker", "-H", f"unix://{RUN / 'host1.sock'}", "version"],
                              capture_output=True).returncode == 0
        assert run_labctl("cleanup", "--all").returncode == 0
        assert cluster_objects() == NOTHING
    finally:
        run_labctl("cluster", "down")


@pytest.mark.parametrize("count", ["0", "9"])
def test_a_count_out_of_range_is_one_line(count):
    out = run_labctl("cluster", "up", count)
    assert out.returncode == 2 and "1 to 8" in out.stderr and len(out.stderr.splitlines()) == 1, out.stderr
    assert cluster_objects() == NOTHING


def test_no_etcd_is_one_line_and_makes_nothing():
    out = run_labctl("cluster", "up", "2", env=dict(os.environ, PATH="/nonexistent"))
    assert out.returncode == 2 and "apt-get install -y etcd-server" in out.stderr, out.stderr
    assert len(out.stderr.splitlines()) == 1 and cluster_objects() == NOTHING


def test_up_twice_is_one_line_and_leaves_the_first_cluster(cluster):
    before = cluster_objects()
    out = run_labctl("cluster", "up", "3")
    assert out.returncode == 2 and "up already" in out.stderr and len(out.stderr.splitlines()) == 1, out.stderr
    assert cluster_objects() == before


def test_etcd_killed_and_started_again_loses_nothing_and_the_daemons_reconnect(cluster):
    from labctl.cluster import etcd
    deadline = time.monotonic() + 10
    while len(registered()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run_labctl("network", "create", "-d", "overlay", "kept").returncode == 0
    info = etcd.running()
    os.kill(info["pid"], signal.SIGKILL)   # a crash: the data directory stays
    deadline = time.monotonic() + 5
    while etcd.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(TTL)                        # the daemons' keepalives fail meanwhile
    etcd.start()                           # the same data directory
    time.sleep(TTL * 2)                    # longer than a lease: only refreshed keys are still there
    hosts = registered()
    assert sorted(hosts) == ["/labctl/hosts/host1", "/labctl/hosts/host2"], hosts
    assert "kept" in etcdctl("get", "/labctl/networks/kept", "--print-value-only").stdout


def test_a_network_made_on_one_host_is_that_hosts_alone(cluster):
    """Bridges and nftables tables are per network namespace: host1's `docker network create` makes
    them in lab-host1, not on the real host nor on host2; its record is in host1's state directory."""
    made = subprocess.run(["docker", "-H", f"unix://{RUN / 'host1.sock'}", "network", "create", "mine"],
                          capture_output=True, text=True, timeout=30)
    assert made.returncode == 0, made.stderr
    record = json.loads((state.state_dir() / "cluster" / "host1" / "networks" / "mine.json").read_text())
    bridges = {}
    for where in ("lab-host1", "lab-host2", None):
        with iproute(where) as ns:
            bridges[where] = bool(ns.link_lookup(ifname=record["bridge"]))
    assert bridges == {"lab-host1": True, "lab-host2": False, None: False}
    tables = subprocess.run(["ip", "netns", "exec", "lab-host1", "nft", "list", "tables"], capture_output=True,
                            text=True).stdout
    assert f"labctl_{record['bridge']}" in tables
    assert f"labctl_{record['bridge']}" not in subprocess.run(["nft", "list", "tables"], capture_output=True,
                                                              text=True).stdout
    listed = subprocess.run(["docker", "-H", f"unix://{RUN / 'host2.sock'}", "network", "ls", "--format", "{{.Name}}"],
                            capture_output=True, text=True, timeout=30)
    assert "mine" not in listed.stdout.split()


def test_cluster_down_removes_the_containers_a_host_runs():
    """A container run by host1's daemon: its process, overlay mount and cgroups are journaled in host1's
    state directory; `cluster down` replays that journal inside lab-host1 (the residue fixture judges
    the mounts and cgroups)."""
    assert run_labctl("cluster", "up", "1").returncode == 0
    try:
        docker = ["docker", "-H", f"unix://{RUN / 'host1.sock'}"]
        ran = subprocess.run(docker + ["run", "-d", "--name", "onhost1", "busybox", "sleep", "1000"],
                             capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
        pid = int(subprocess.run(docker + ["inspect", "-f", "{{.State.Pid}}", "onhost1"], capture_output=True,
                                 text=True, timeout=30).stdout)
        assert state.process_start_time(pid) is not None
        start = state.process_start_time(pid)
    finally:
        down = run_labctl("cluster", "down")
    assert down.returncode == 0, down.stderr
    assert state.process_start_time(pid) != start   # gone (or the PID is another process's now)
    assert cluster_objects() == NOTHING
