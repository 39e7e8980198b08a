"""Step 13 of the course beyond its check (tests/test_checks.py): the demo runs a real two-host cluster
and leaves nothing (the residue fixture; no cluster namespace, no etcd, no container), and its figures
draw what it measured: the same echo seen inside the client container and on the underlay, and a
SIGKILLed host's lease taking its container's endpoint out of etcd and the other host's FDB."""
from __future__ import annotations

import os
import re
import time

import pytest

from helpers import run_labctl
from labctl import state

pytestmark = pytest.mark.root


def test_step_13_demo_runs_and_leaves_nothing():
    from labctl.cluster import etcd, underlay
    started = time.time()
    result = run_labctl("step", "13", "--no-explain", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert underlay.lab_namespaces() == [] and not etcd.running()
    assert re.search(r"UDP \d+ → 4789", result.stdout) and "flags 0x08, VNI" in result.stdout
    for name in ("step13-rtt-throughput", "step13-lease"):
        assert os.stat(state.subdir("figures") / f"{name}.png").st_mtime >= started


def test_a_killed_hosts_container_leaves_etcd_and_the_other_hosts_fdb_when_its_lease_expires():
    """The demo's containers, judged by the kernel: srv's `nc` answers cli over the overlay, the captured
    echo carries the containers' eth0 addresses (read over netlink in /proc/PID/ns/net) inside UDP 4789
    with the network's VNI; after host2's daemon is SIGKILLed, cli's MAC stays in host1's FDB (read over
    netlink) until the lease expires, then leaves it, with host2's key and cli's endpoint key."""
    from labctl.cluster import vxlan
    from labctl.demos import clusterdemo
    from labctl.network.netlink import iproute
    with clusterdemo.cluster(ttl=4) as c:
        srv, cli = (clusterdemo.eth0(f"/proc/{ct['pid']}/ns/net") for ct in (c.server, c.client))
        for ct, host in ((c.server, "lab-host1"), (c.client, "lab-host2")):   # containers, not host namespaces
            assert os.stat(f"/proc/{ct['pid']}/ns/net").st_ino not in (os.stat(f"/run/netns/{host}").st_ino,
                                                                       os.stat("/proc/self/ns/net").st_ino)
        with open(f"/proc/{c.server['pid']}/cgroup") as f:
            assert "/labctl-host1-" in f.read()
        assert clusterdemo.ask(c) == b"pong\n"
        inner, outer = clusterdemo.packet(c)
        assert (inner["src"], inner["dst"]) == (cli["address"], srv["address"])
        assert (outer["inner_src"], outer["inner_dst"], outer["inner_src_mac"]) == \
            (cli["address"], srv["address"], cli["mac"])
        vni = c.net["vni"]
        with iproute(vxlan.overlay_netns(c.hosts[0], vni)) as ns:
            vx = ns.link_lookup(ifname=vxlan.vxlan_name(vni))[0]
            assert {e.get_attr("NDA_LLADDR"): e.get_attr("NDA_DST") for e in ns.fdb("dump", ifindex=vx)
                    if e.get_attr("NDA_DST")}.get(cli["mac"]) == "10.206.0.2"
        lease = clusterdemo.kill_and_time_lease(c)
        with iproute(vxlan.overlay_netns(c.hosts[0], vni)) as ns:
            vx = ns.link_lookup(ifname=vxlan.vxlan_name(vni))[0]
            # the VXLAN device's own entries (with a dst); the bridge's learned ones on that port age out
            assert cli["mac"] not in {e.get_attr("NDA_LLADDR") for e in ns.fdb("dump", ifindex=vx)
                                      if e.get_attr("NDA_DST")}
    assert (outer["dport"], outer["vni"]) == (4789, vni)
    assert outer["length"] - inner["length"] == 50                     # outer Ethernet, IPv4, UDP, VXLAN
    assert lease["fdb_at_kill"] and lease["endpoint_lease"] == lease["lease"]
    assert set(lease["gone"]) == {"host key", "endpoint key", "host1's FDB entry"}, lease
    assert all(4 * 0.5 <= s <= 4 + 2 for s in lease["gone"].values()), lease
    assert abs(lease["gone"]["host key"] - lease["gone"]["endpoint key"]) < 0.5
    assert lease["gone"]["host1's FDB entry"] - lease["gone"]["endpoint key"] < 1.0


def _lab_host_cgroup_pids() -> list[int]:
    """Processes in a cluster host's cgroups (their containers): /proc/PID/cgroup names labctl-hostN-."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cgroup") as f:
                if "/labctl-host" in f.read():
                    found.append(int(entry))
        except OSError:
            pass
    return found


def test_ctrl_c_with_the_demos_containers_running_leaves_no_container_and_no_cluster():
    import signal
    import subprocess
    import sys
    from labctl.cluster import etcd, underlay
    proc = subprocess.Popen([sys.executable, "-m", "labctl", "step", "13", "--no-explain"], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        for line in proc.stdout:
            if "answers 'pong'" in line:     # srv and cli run, on two hosts
                break
        containers = _lab_host_cgroup_pids()
        assert len(containers) >= 2, containers
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130, proc.stderr.read()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _lab_host_cgroup_pids() == [] and all(not os.path.exists(f"/proc/{p}") for p in containers)
    assert underlay.lab_namespaces() == [] and not etcd.running()
