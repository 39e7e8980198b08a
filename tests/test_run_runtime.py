"""Step 10: `labctl run --runtime runc|crun|labctl-oci`: labctl writes the bundle on the container's own
overlay root and hands it to that OCI runtime through its supervisor (the shim's part); ps, logs, exec,
stats, stop and rm then work as with labctl's own runtime. Judged by the kernel (PID 1's namespaces and
cgroup) and by what the commands return."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import REPO

pytestmark = pytest.mark.root
RUNTIMES = ["runc", "crun", "labctl-oci"]


def labctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labctl", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _needs(runtime: str) -> None:
    if runtime in ("runc", "crun") and not shutil.which(runtime):
        pytest.skip(f"{runtime} is not installed")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_run_in_the_foreground_gives_the_output_and_the_status(runtime):
    _needs(runtime)
    done = labctl("run", "--rm", "--runtime", runtime, "busybox", "sh", "-c", "echo hello; exit 3")
    assert done.returncode == 3, done.stderr
    assert done.stdout == "hello\n"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_ps_logs_exec_stats_stop_rm_work_whoever_made_it(runtime):
    _needs(runtime)
    name = f"rt-{runtime}"
    started = labctl("run", "-d", "--name", name, "--runtime", runtime, "-m", "64m", "busybox",
                     "sh", "-c", "echo started; sleep 60")
    assert started.returncode == 0, started.stderr
    try:
        record = json.loads(labctl("inspect", name).stdout)[0]
        pid = record["state"]["pid"]
        for kind in ("pid", "mnt", "uts", "ipc", "net"):
            assert os.readlink(f"/proc/{pid}/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}"), kind
        cgroup_dirs = record["state"]["cgroup"]["dirs"].values()
        assert any(str(pid) in open(os.path.join(d, "cgroup.procs")).read().split() for d in cgroup_dirs), \
            "PID 1 is not in the cgroup labctl made for the container"
        assert name in labctl("ps").stdout
        deadline = time.monotonic() + 5
        while "started" not in labctl("logs", name).stdout and time.monotonic() < deadline:
            time.sleep(0.1)
        assert labctl("logs", name).stdout == "started\n"
        inside = labctl("exec", name, "readlink", "/proc/self/ns/pid")
        assert inside.stdout.strip() == os.readlink(f"/proc/{pid}/ns/pid"), inside.stderr
        stats = labctl("stats", "--no-stream", name)
        assert stats.returncode == 0 and name in stats.stdout and "64" in stats.stdout, stats.stdout + stats.stderr
        assert labctl("stop", "-t", "1", name).returncode == 0
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    finally:
        removed = labctl("rm", "-f", name)
    assert removed.returncode == 0, removed.stderr
    assert name not in labctl("ps", "-a").stdout


def _cgroup_dirs_named(name: str) -> list[str]:
    """Every directory called `name` in any cgroup hierarchy mounted (the kernel's cgroupfs, walked)."""
    found = []
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    for fields in mounts:
        if fields[fields.index("-") + 1] in ("cgroup", "cgroup2"):
            for root, dirs, _ in os.walk(fields[4]):
                found += [os.path.join(root, d) for d in dirs if d == name]
    return found


@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_cleanup_removes_the_runtimes_cgroups_when_its_state_is_lost(runtime):
    """A crash that took the runtime's own state with it (killed between its create and labctl's record):
    `runc delete` cannot find the container, so its cgroups in the hierarchies labctl does not use
    (name=systemd, freezer, ...) would stay. cleanup removes them by path, judged by walking cgroupfs."""
    _needs(runtime)
    from labctl.containers import store
    started = labctl("run", "-d", "--runtime", runtime, "busybox", "sleep", "60")
    assert started.returncode == 0, started.stderr
    container = store.load(started.stdout.strip())
    name = container.state["cgroup"]["name"]
    assert _cgroup_dirs_named(name), "the container has cgroups"
    os.kill(container.state["supervisor_pid"], 9)
    os.kill(container.pid, 9)
    shutil.rmtree(container.dir / "oci")            # what the runtime knew of it: gone with the crash
    assert labctl("cleanup", "--all").returncode == 0
    assert _cgroup_dirs_named(name) == []
