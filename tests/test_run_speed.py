"""What `labctl run` does to be fast, judged by the kernel: a `--rm` container's overlay root is mounted
"volatile" (its unmount does not sync the disk), a kept container's root is not, the journal records
written without fsync still let `labctl cleanup` remove everything after a SIGKILL, and a container's
processes enter its cgroup without the RCU grace period a write into cgroup.procs waits for."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import run_labctl
from labctl import state


pytestmark = pytest.mark.root


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
        from labctl.containers import store
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


def _container_cgroup_opens(log: str) -> tuple[list[str], list[str]]:
    """(cgroup.procs, tasks) files of a container's cgroup (labctl-<id>) that the strace log opens for writing."""
    opened = re.findall(r'openat\(AT_FDCWD, "([^"]*/labctl-[0-9a-f]+/(?:cgroup\.procs|tasks))", O_WRONLY', log)
    return [p for p in opened if p.endswith("cgroup.procs")], [p for p in opened if p.endswith("/tasks")]


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (vagrant/provision.sh installs it)")
def test_pid1_and_exec_enter_the_cgroup_at_birth_not_by_a_write_into_cgroup_procs(tmp_path):
    """PID 1 and an exec'd process are born in the container's v2 cgroup (clone3 CLONE_INTO_CGROUP) and move
    themselves into each v1 hierarchy ("0" into `tasks`): strace shows no PID written into the container's
    cgroup.procs, and the kernel shows both processes in the container's cgroup in every hierarchy."""
    name = "speedtest-cgroup"
    started = run_labctl("run", "-d", "--name", name, "busybox", "sleep", "600")
    assert started.returncode == 0, started.stderr
    try:
        from labctl.containers import store
        container = store.find(name)
        dirs = container.state["cgroup"]["dirs"]
        versions = {h["mountpoint"]: h["version"] for h in container.state["cgroup"]["hierarchies"]}
        log = tmp_path / "strace.log"
        traced = subprocess.run(["strace", "-f", "-qq", "-o", str(log), "-e", "trace=openat,clone3",
                                 sys.executable, "-m", "labctl", "exec", name, "cat", "/proc/self/cgroup"],
                                capture_output=True, text=True, timeout=60)
        assert traced.returncode == 0, traced.stderr
        text = log.read_text()
        procs_writes, tasks_writes = _container_cgroup_opens(text)
        assert not procs_writes, procs_writes
        v1 = sorted(f"{d}/tasks" for m, d in dirs.items() if versions[m] == 1)
        assert sorted(set(tasks_writes)) == v1, (tasks_writes, v1)
        if 2 in versions.values():
            assert re.search(r"clone3\(\{flags=CLONE_INTO_CGROUP", text), "no clone3(CLONE_INTO_CGROUP) in the log"
        # the kernel's view, from the host: PID 1 is in each of the container's cgroups
        for mountpoint, directory in dirs.items():
            assert str(container.pid) in Path(directory, "cgroup.procs").read_text().split(), directory
        # and the exec'd process, from inside: the root of the container's cgroup namespace, "/"
        lines = traced.stdout.split()
        assert lines and all(line.endswith(":/") for line in lines), traced.stdout
    finally:
        assert run_labctl("rm", "-f", name).returncode == 0


@pytest.mark.parametrize("clone3", ["works", "refused"])
def test_fork_into_puts_the_child_in_every_hierarchy_of_the_cgroup(monkeypatch, clone3):
    """runtime/cgroup.py's fork_into + join_self, with clone3 working, and refused as a seccomp profile in a
    container of containers refuses it (ENOSYS): the child ends up in the cgroup in every hierarchy
    either way, judged by each hierarchy's cgroup.procs."""
    import errno
    from labctl.kernel import syscalls
    from labctl.kernel.cgroups.limits import Limits
    from labctl.containers import resources
    from labctl.runtime import cgroup
    if clone3 == "refused":
        def refuse(fd):
            raise OSError(errno.ENOSYS, "clone3: Function not implemented")
        monkeypatch.setattr(syscalls, "fork_into_cgroup", refuse)
    info = resources.create(f"labctl-forkinto-{clone3}", Limits())
    try:
        report_r, report_w = os.pipe()
        hold_r, hold_w = os.pipe()
        pid = cgroup.fork_into(info)
        if pid == 0:   # the child: join, report, wait until the parent has looked, exit
            try:
                os.close(hold_w)
                cgroup.join_self(info)
                os.write(report_w, b"joined")
                os.read(hold_r, 1)   # EOF once the parent closes its end
            finally:
                os._exit(0)
        os.close(report_w)
        try:
            assert os.read(report_r, 100) == b"joined"
            for directory in info["dirs"].values():
                assert str(pid) in Path(directory, "cgroup.procs").read_text().split(), directory
        finally:
            os.close(hold_w)
            os.waitpid(pid, 0)
            for fd in (report_r, hold_r):
                os.close(fd)
    finally:
        resources.remove(info)


def test_fork_into_a_removed_cgroup_is_one_clear_error():
    """The container's cgroup is gone (it exited meanwhile): a LabError naming the cgroup, no child."""
    from labctl.containers import resources
    from labctl.errors import LabError
    from labctl.kernel.cgroups.limits import Limits
    from labctl.runtime import cgroup
    info = resources.create("labctl-forkinto-gone", Limits())
    resources.remove(info)
    if not cgroup._dirs(info, 2):
        pytest.skip("no cgroup v2 hierarchy here: fork_into is a plain fork")
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text()
    with pytest.raises(LabError, match="cgroup .*labctl-forkinto-gone"):
        pid = cgroup.fork_into(info)
        if pid == 0:
            os._exit(0)
    assert Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text() == children


def test_run_capture_leaves_no_descriptor_open():
    """lifecycle.run_capture (steps and notebooks use it) closes every descriptor it opened: /proc/self/fd."""
    from labctl.containers import lifecycle
    spec, image = lifecycle.build_spec("busybox", ["echo", "captured"], auto_remove=True)
    lifecycle.run_capture(spec, image)   # the first run may import modules that keep a descriptor
    before = sorted(os.listdir("/proc/self/fd"))
    code, out = lifecycle.run_capture(*lifecycle.build_spec("busybox", ["echo", "captured"], auto_remove=True))
    assert (code, out) == (0, "captured\n")
    assert sorted(os.listdir("/proc/self/fd")) == before
