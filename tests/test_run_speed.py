"""What `labctl run` does to be fast, judged by the kernel: a `--rm` container's overlay root is mounted
"volatile" (its unmount does not sync the disk), a kept container's root is not, and the journal records
written without fsync still let `labctl cleanup` remove everything after a SIGKILL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from helpers import run_labctl
from labctl import state


def _root_mount_options(mountinfo: str) -> list[str]:
    """The super options of the filesystem mounted at / in a /proc/<pid>/mountinfo text."""
    for line in mountinfo.splitlines():
        fields = line.split()
        if fields[4] == "/":
            sep = fields.index("-")
            assert fields[sep + 1] == "overlay", line
            return fields[sep + 3].split(",")
    raise AssertionError("no root mount in the container's mountinfo")


def _volatile(options: list[str]) -> bool:
    return "volatile" in options or "fsync=volatile" in options   # the latter from Linux 6.x on


def test_rm_container_root_is_volatile_and_a_kept_one_is_not():
    rm = run_labctl("run", "--rm", "busybox", "cat", "/proc/self/mountinfo")
    assert rm.returncode == 0, rm.stderr
    assert _volatile(_root_mount_options(rm.stdout)), rm.stdout
    kept = run_labctl("run", "--name", "speedtest-kept", "busybox", "cat", "/proc/self/mountinfo")
    try:
        assert kept.returncode == 0, kept.stderr
        assert not _volatile(_root_mount_options(kept.stdout)), kept.stdout
    finally:
        assert run_labctl("rm", "-f", "speedtest-kept").returncode == 0


def test_cleanup_after_sigkill_of_a_running_rm_container_finds_every_record():
    """labctl and the supervisor are SIGKILLed while the container runs: the unfsynced journal records
    are on disk (in the page cache) and `labctl cleanup` removes the mount, the cgroup and the files."""
    labctl = subprocess.Popen([sys.executable, "-m", "labctl", "run", "--rm", "--name", "speedtest-killed",
                               "busybox", "sleep", "600"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from labctl.container import store
        deadline = time.monotonic() + 20
        container = None
        while time.monotonic() < deadline:
            try:
                container = store.find("speedtest-killed")
                if container.state.get("status") == "running":
                    break
            except store.NoSuchContainer:
                pass
            time.sleep(0.05)
        assert container is not None and container.state.get("status") == "running"
        merged, procs = container.state["root"], container.state["cgroup"]["dirs"]
        for pid in (container.state["supervisor_pid"], labctl.pid):
            os.kill(pid, signal.SIGKILL)
        labctl.wait()
        assert state.is_mountpoint(merged)
        kinds = {rec.kind for rec in state.records()}
        assert {"container", "cgroup", "mount", "path"} <= kinds, kinds
    finally:
        if labctl.poll() is None:
            labctl.kill()
            labctl.wait()
        result = run_labctl("cleanup")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not state.is_mountpoint(merged)
    assert not any(os.path.exists(d) for d in procs.values())
    assert not os.path.exists(container.dir)


def test_rm_bridge_container_is_torn_down_by_its_supervisor():
    """The supervisor of a foreground container starts `nft` (a child) to detach a bridge network after
    PID 1 has died: it must fork in its own PID namespace, not PID 1's dead one (that fork fails ENOMEM)."""
    result = run_labctl("run", "--rm", "--network", "bridge", "busybox", "cat", "/sys/class/net/eth0/address")
    try:
        assert result.returncode == 0, result.stderr
        assert "tearing down" not in result.stderr, result.stderr
        veths = [name for name in os.listdir("/sys/class/net") if name.startswith("lab") and
                 os.path.exists(f"/sys/class/net/{name}/brport")]   # lab* ports still on the lab bridge
        assert not veths, veths
    finally:
        run_labctl("network", "rm")
