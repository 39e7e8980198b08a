"""Step 10: what a crash of labctl-runtime leaves, and `labctl cleanup` removing it (runtime/ocicleanup.py),
judged by the filesystem (the state directory, <state>/seccomp), cgroupfs and /proc; never by what
cleanup printed. A container whose PID 1 lives is no leftover: cleanup leaves it, --all removes it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from test_oci_runtime import RUNTIME, base_config, bundle, busybox_rootfs, root, rt, state, wait_status  # noqa: F401

pytestmark = pytest.mark.root
DEFAULT_ROOT = Path("/run/labctl-runtime")


def labctl_cleanup(*words: str) -> None:
    done = subprocess.run([sys.executable, "-m", "labctl", "cleanup", *words], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def start_time(pid: int) -> int | None:
    from labctl.runtime.ocistate import process_start
    return process_start(pid)


def cgroup_dirs(saved: dict) -> list[Path]:
    return [Path(d) for d in saved["cgroup"]["dirs"].values()]


def test_cleanup_removes_what_a_create_killed_halfway_left(bundle, tmp_path):
    """SIGKILL `create` (default --root) while its prestart hook runs: PID 1 made, in its cgroup,
    waiting for GO; the state directory written. After cleanup: no directory, no cgroup, no PID 1."""
    marker = tmp_path / "hook-runs"
    doc = base_config(["sleep", "30"])
    doc["linux"]["cgroupsPath"] = "crashed/leaf"
    doc["hooks"] = {"prestart": [{"path": "/bin/sh", "args": [
        "sh", "-c", f"touch {marker}; while [ -e {marker} ]; do sleep 0.05; done"]}]}
    cid = f"crash-{os.getpid()}"
    create = subprocess.Popen(RUNTIME + ["create", "--bundle", str(bundle(doc)), cid], cwd=REPO,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not marker.exists() and create.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), "the prestart hook never ran"
    saved = json.loads((DEFAULT_ROOT / cid / "state.json").read_text())
    pids = {int(p) for d in cgroup_dirs(saved) for p in (d / "cgroup.procs").read_text().split()}
    assert pids, "no PID 1 in the container's cgroup"
    starts = {pid: start_time(pid) for pid in pids}
    create.send_signal(signal.SIGKILL)
    create.wait()
    marker.unlink()   # the hook (the dead create's orphan now) ends
    assert (DEFAULT_ROOT / cid).is_dir(), "the killed create left nothing to clean up"
    labctl_cleanup()
    assert not (DEFAULT_ROOT / cid).exists()
    assert not any(d.exists() or d.parent.exists() for d in cgroup_dirs(saved)), "the cgroup (or crashed/) is left"
    assert all(start_time(pid) != start for pid, start in starts.items())


def test_cleanup_leaves_a_create_under_way(bundle, root, tmp_path):
    """`create` still running (in its prestart hook; PID 1 not recorded yet): cleanup leaves its
    directory, cgroup and PID 1 (the create's PID and start time, journaled), and the create completes."""
    marker = tmp_path / "hook-runs"
    doc = base_config(["sleep", "30"])
    doc["hooks"] = {"prestart": [{"path": "/bin/sh", "args": [
        "sh", "-c", f"touch {marker}; while [ -e {marker} ]; do sleep 0.05; done"]}]}
    create = subprocess.Popen(RUNTIME + ["--root", str(root), "create", "--bundle", str(bundle(doc)), "slow1"],
                              cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not marker.exists() and create.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists(), "the prestart hook never ran"
        saved = json.loads((root / "slow1" / "state.json").read_text())
        assert saved["pid"] == 0, "the test wants cleanup to run before create has recorded PID 1"
        pids = {int(p) for d in cgroup_dirs(saved) for p in (d / "cgroup.procs").read_text().split()}
        labctl_cleanup()
        assert all(d.is_dir() for d in cgroup_dirs(saved)) and (root / "slow1" / "state.json").exists()
        assert pids and pids <= {int(p) for d in cgroup_dirs(saved) for p in (d / "cgroup.procs").read_text().split()}
    finally:
        marker.unlink(missing_ok=True)
        create.wait(30)
    assert create.returncode == 0
    assert state(root, "slow1")["status"] == "created"


def test_cleanup_removes_a_stopped_container_nobody_deleted(bundle, root, lab_state_dir):
    """PID 1 killed and the caller gone (containerd's shim killed): the directory and the cgroup go,
    and the seccomp filters compiled for it in <state>/seccomp."""
    doc = base_config(["sleep", "30"])
    doc["linux"]["cgroupsPath"] = "lost/leaf"
    assert doc["linux"].get("seccomp"), "the test wants a container with a seccomp filter"
    rt(root, "create", "--bundle", str(bundle(doc)), "lost1")
    rt(root, "start", "lost1")
    pid = wait_status(root, "lost1", "running")["pid"]
    saved = json.loads((root / "lost1" / "state.json").read_text())
    assert list((lab_state_dir / "seccomp").iterdir()), "no filter was cached"
    os.kill(pid, signal.SIGKILL)
    assert wait_status(root, "lost1", "stopped")["status"] == "stopped"
    labctl_cleanup()
    assert not (root / "lost1").exists()
    assert not any(d.exists() or d.parent.exists() for d in cgroup_dirs(saved)), "the cgroup (or lost/) is left"
    assert not list((lab_state_dir / "seccomp").iterdir())


def test_cleanup_leaves_a_live_container_and_all_removes_it(bundle, root):
    """A created container (PID 1 waits in exec.fifo for `start`) is someone's: cleanup keeps it whole;
    --all kills PID 1 (the PID and start time state.json recorded) and removes the rest."""
    rt(root, "create", "--bundle", str(bundle(base_config(["sleep", "30"]))), "kept1")
    saved = json.loads((root / "kept1" / "state.json").read_text())
    labctl_cleanup()
    assert start_time(saved["pid"]) == saved["pid_start"], "cleanup killed a live container's PID 1"
    assert (root / "kept1" / "exec.fifo").exists() and all(d.is_dir() for d in cgroup_dirs(saved))
    assert str(saved["pid"]) in (cgroup_dirs(saved)[0] / "cgroup.procs").read_text().split()
    labctl_cleanup("--all")
    assert start_time(saved["pid"]) != saved["pid_start"]
    assert not (root / "kept1").exists()
    assert not any(d.exists() for d in cgroup_dirs(saved))


def test_cleanup_kills_the_pid1_of_a_labctl_container_whose_supervisor_died():
    """`labctl run --runtime labctl-oci`: labctl-runtime's state is inside labctl's container directory,
    so the container lives and dies with labctl's supervisor. Supervisor killed, PID 1 alive: a plain
    `labctl cleanup` (no --all) kills PID 1 (its PID and start time) and removes the runtime's state."""
    from labctl.containers import store
    started = subprocess.run([sys.executable, "-m", "labctl", "run", "-d", "--runtime", "labctl-oci", "busybox",
                              "sleep", "60"], capture_output=True, text=True, cwd=REPO, timeout=60,
                             stdin=subprocess.DEVNULL)
    assert started.returncode == 0, started.stderr
    container = store.load(started.stdout.strip())
    oci_dir = container.dir / "oci" / container.id
    saved = json.loads((oci_dir / "state.json").read_text())
    assert saved["pid"] == container.pid and start_time(container.pid) == saved["pid_start"]
    os.kill(container.state["supervisor_pid"], signal.SIGKILL)
    labctl_cleanup()
    assert start_time(saved["pid"]) != saved["pid_start"], "PID 1 of a dead labctl container was left running"
    assert not oci_dir.exists() and not any(d.exists() for d in cgroup_dirs(saved))
