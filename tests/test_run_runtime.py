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


def test_labctl_run_hands_its_runtime_what_its_config_json_says(monkeypatch):
    """`labctl run` goes flags -> config.json -> runtime, as Docker does: a field changed in the file after
    labctl wrote it (the hostname, one capability less) is what the kernel shows inside the container."""
    from labctl.containers import lifecycle, ociconfig
    from labctl.security.capabilities import to_mask
    written = ociconfig.write_config
    seen = {}

    def edited(container, config, cgroups_path, labctl=False):
        bundle = written(container, config, cgroups_path, labctl)
        doc = json.loads((bundle / "config.json").read_text())
        doc["hostname"] = "from-the-file"
        for kind in ("bounding", "effective", "permitted"):
            doc["process"]["capabilities"][kind].remove("CAP_NET_RAW")
        (bundle / "config.json").write_text(json.dumps(doc))
        seen["caps"] = doc["process"]["capabilities"]["effective"]
        return bundle
    monkeypatch.setattr(ociconfig, "write_config", edited)
    spec, image = lifecycle.build_spec("busybox", ["sh", "-c", "hostname; grep CapEff /proc/self/status"],
                                       auto_remove=True)
    code, out = lifecycle.run_capture(spec, image)
    assert code == 0, out
    hostname, caps = out.split("\n")[:2]
    assert hostname == "from-the-file"
    assert int(caps.split()[1], 16) == to_mask(seen["caps"]) and not to_mask(["CAP_NET_RAW"]) & int(caps.split()[1], 16)


def config_json_of(name: str) -> dict:
    """The config.json `labctl run` wrote for the container, from its directory in the state directory."""
    from labctl.containers import store
    return json.loads((store.find(name).dir / "bundle" / "config.json").read_text())


def test_labctl_runs_config_json_says_what_the_kernel_shows():
    """The config.json `labctl run` wrote for a running container says what the kernel shows of its PID 1:
    the namespaces, the capabilities, the user, seccomp and the memory limit."""
    started = labctl("run", "-d", "--name", "cfgjson", "-u", "nobody", "--cap-drop", "CHOWN", "-m", "48m",
                     "busybox", "sleep", "60")
    assert started.returncode == 0, started.stderr
    try:
        record = json.loads(labctl("inspect", "cfgjson").stdout)[0]["state"]
        pid = record["pid"]
        doc = config_json_of("cfgjson")
        kinds = {n["type"] for n in doc["linux"]["namespaces"]}
        for ours, theirs in (("pid", "pid"), ("mnt", "mount"), ("uts", "uts"), ("ipc", "ipc"),
                             ("net", "network"), ("cgroup", "cgroup"), ("time", "time")):
            assert theirs in kinds, theirs
            assert os.readlink(f"/proc/{pid}/ns/{ours}") != os.readlink(f"/proc/self/ns/{ours}"), ours
        status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status").read().splitlines())
        from labctl.security.capabilities import to_mask
        assert int(status["CapBnd"], 16) == to_mask(doc["process"]["capabilities"]["bounding"])
        assert int(status["CapEff"], 16) == 0   # not root: setuid(2) cleared the effective set, as Docker's
        assert "CAP_CHOWN" not in doc["process"]["capabilities"]["bounding"]
        assert status["Uid"].split()[0] == str(doc["process"]["user"]["uid"]) == "65534"
        assert status["Seccomp"].strip() == "2" and doc["linux"]["seccomp"]["syscalls"]
        assert doc["linux"]["resources"]["memory"]["limit"] == 48 << 20
        limits = [os.path.join(d, f) for d in record["cgroup"]["dirs"].values()
                  for f in ("memory.max", "memory.limit_in_bytes") if os.path.exists(os.path.join(d, f))]
        assert limits and int(open(limits[0]).read()) == 48 << 20   # the kernel's own limit, as the file said
    finally:
        labctl("rm", "-f", "cfgjson")
