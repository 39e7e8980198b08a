"""Step 13 of the course beyond its check (tests/test_checks.py): the demo runs a real two-host cluster
and leaves nothing (the residue fixture; no cluster namespace, no etcd), and its figures draw what it
measured: the same echo seen inside an endpoint and on the underlay, and a SIGKILLed host's lease."""
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


def test_a_killed_hosts_keys_leave_etcd_when_its_lease_expires_not_before():
    """The lease timeline the demo draws, asserted: both keys go together, after most of the TTL."""
    from labctl.demos import clusterdemo
    with clusterdemo.cluster(ttl=4) as c:
        inner, outer = clusterdemo.packet(c)
        lease = clusterdemo.kill_and_time_lease(c)
    assert (outer["dport"], outer["vni"], outer["inner_src"]) == (4789, c.net["vni"], c.a["address"])
    assert outer["length"] - inner["length"] == 50                     # outer Ethernet, IPv4, UDP, VXLAN
    assert set(lease["gone"]) == {"host key", "endpoint key"}
    assert all(4 * 0.5 <= s <= 4 + 2 for s in lease["gone"].values()), lease
    assert abs(lease["gone"]["host key"] - lease["gone"]["endpoint key"]) < 0.5
