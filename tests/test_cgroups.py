"""Step 3: cgroups, judged by the kernel's cgroup files, /proc/<pid>/cgroup and what the processes suffered.

The behaviour tests are parametrized by cgroup version: each runs against the real hierarchy that holds
its controller on this host and is skipped, with the reason, for the version the host does not have.
On the hybrid development machines the v1 cases run; on the classroom VM (pure cgroup v2) the v2 ones.
"""
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

from helpers import run_labctl, student_lab
from labctl.kernel import cgroups
from labctl.kernel.cgroups import Cgroup, hierarchy, parse_limits
from labctl.demos import cgroups as experiments
from labctl.errors import LabError

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parent.parent
LAYOUT = cgroups.detect()


def needs(controller: str, version: int):
    """Skip unless `controller` is in a cgroup v`version` hierarchy here (and delegated to us, on v2)."""
    h = LAYOUT.by_controller.get(controller)
    if h is None:
        pytest.skip(f"this host has no {controller} cgroup controller at all")
    if h.version != version:
        where = f"cgroup v{h.version} at {h.mountpoint}"
        pytest.skip(f"the {controller} controller is on {where} here, not on cgroup v{version}"
                    + (" (this host's cgroup2 holds no such controller); the v2 case runs on pure-v2 hosts "
                       "such as the classroom VM" if version == 2 else ""))
    if version == 2 and controller in hierarchy.V2_CONTROLLERS:
        offered = (h.own_dir / "cgroup.controllers").read_text().split()
        if controller not in offered:
            pytest.skip(f"cgroup v2's {controller} controller is not delegated to {h.own_dir}: run the suite in a "
                        "delegated scope: systemd-run --scope -p Delegate=yes --quiet .venv/bin/python -m pytest")
    return h


VERSIONS = [pytest.param(1, id="v1"), pytest.param(2, id="v2")]


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{time.monotonic_ns() % 100000}"


def read(path: Path) -> str:
    return path.read_text().strip()


# ---------------------------------------------------------------------------------------------
# Where things are


@pytest.mark.root(False)
def test_layout_follows_mountinfo_and_proc_self_cgroup():
    mounts = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ")
            fstype, _, options = right.split()[:3]
            if fstype == "cgroup":
                for option in options.split(","):
                    mounts[option] = (1, left.split()[4])
            elif fstype == "cgroup2":
                mounts["cgroup2"] = (2, left.split()[4])
    for controller, h in LAYOUT.by_controller.items():
        if h.version == 1:
            assert mounts[hierarchy.V1_NAMES[controller]] == (1, str(h.mountpoint)), controller
        else:
            assert mounts["cgroup2"] == (2, str(h.mountpoint))
    own = cgroups.cgroup_of("self")
    memory = LAYOUT.by_controller["memory"]
    key = "" if memory.version == 2 else "memory"
    if "/labctl" not in own[key]:
        assert memory.own_dir == Path(str(memory.mountpoint) + own[key].rstrip("/"))


@pytest.mark.root(False)
def test_docker_terms_parse_like_docker():
    limits = parse_limits(memory="64m", cpus="0.5", pids_limit=32, cpu_shares=512)
    assert (limits.memory_bytes, limits.cpu_quota_us, limits.cpu_period_us, limits.pids_max) == (64 << 20, 50000, 100000, 32)
    assert parse_limits(memory="1g", memory_swap="-1").memory_swap_bytes == -1
    assert cgroups.limits.shares_to_weight(1024) == 100 and cgroups.limits.shares_to_weight(2) == 1
    for bad in (dict(memory="lots"), dict(memory="1m"), dict(cpus="0"), dict(pids_limit=0), dict(memory_swap="1g")):
        with pytest.raises(LabError):
            parse_limits(**bad)


def test_one_size_parser_reads_every_form_docker_accepts():
    """`labctl run -m` and `labctl cgroup run -m` share parse_bytes; go-units' RAMInBytes is the model."""
    for text in ("64m", "64M", "64mb", "64MiB", "64mi", " 64 m ", str(64 << 20)):
        assert cgroups.parse_bytes(text) == 64 << 20, text
    assert (cgroups.parse_bytes("1.5g"), cgroups.parse_bytes("512k"), cgroups.parse_bytes("10b")) == (3 << 29, 512 << 10, 10)
    for bad in ("lots", "64x", "-1", "64mm", ""):
        with pytest.raises(LabError, match="not understood"):
            cgroups.parse_bytes(bad)


def test_a_container_record_keeps_its_limits_in_the_cgroup_terms():
    """A container's spec holds the same Limits `labctl cgroup run` makes; a record written before there was
    one Limits class (with "pids") still loads."""
    from labctl.containers.spec import ContainerSpec
    spec = ContainerSpec("busybox", ["true"], [], "/", "root", "h", limits=parse_limits(memory="32m", pids_limit=16))
    again = ContainerSpec.from_json(spec.to_json())
    assert again.limits == spec.limits and again.limits.pids_max == 16
    old = dict(spec.to_json(), limits={"memory_bytes": 32 << 20, "cpus": None, "pids": 16})
    assert ContainerSpec.from_json(old).limits == spec.limits


@pytest.mark.parametrize("version", VERSIONS)
def test_docker_limits_land_in_the_right_files(version):
    for controller in ("memory", "cpu", "pids"):
        needs(controller, version)
    limits = parse_limits(memory="64m", cpus="0.5", pids_limit=32, cpu_shares=512)
    with Cgroup.create(unique("labctl-t3-files"), limits) as cg:
        memory, cpu, pids = cg.path("memory"), cg.path("cpu"), cg.path("pids")
        for directory in (memory, cpu, pids):
            assert directory.parent == LAYOUT.by_controller["memory" if directory == memory else
                                                           "cpu" if directory == cpu else "pids"].lab_dir
        if version == 1:
            assert read(memory / "memory.limit_in_bytes") == str(64 << 20)
            if (memory / "memory.memsw.limit_in_bytes").exists():
                assert read(memory / "memory.memsw.limit_in_bytes") == str(64 << 20)  # no swap
            assert (read(cpu / "cpu.cfs_quota_us"), read(cpu / "cpu.cfs_period_us")) == ("50000", "100000")
            assert read(cpu / "cpu.shares") == "512"
        else:
            assert read(memory / "memory.max") == str(64 << 20)
            if (memory / "memory.swap.max").exists():
                assert read(memory / "memory.swap.max") == "0"
            assert read(cpu / "cpu.max") == "50000 100000"
            assert read(cpu / "cpu.weight") == "59"
        assert read(pids / "pids.max") == "32"
        stats = cg.stats()
        assert (stats.memory_limit_bytes, stats.cpu_quota, stats.pids_max) == (64 << 20, 0.5, 32)


@pytest.mark.root(False)
def test_a_limit_without_its_controller_is_an_error_naming_it():
    layout = cgroups.detect()
    del layout.by_controller["pids"]
    with pytest.raises(LabError, match="no pids cgroup controller"):
        Cgroup.create(unique("labctl-t3-nopids"), parse_limits(pids_limit=32), layout=layout)


@pytest.mark.skipif(LAYOUT.unified is None, reason="this host has no cgroup2 mount")
def test_v2_controller_not_delegated_is_an_error_naming_it():
    """Ask the real cgroup v2 tree for a controller its cgroup.controllers does not offer us."""
    offered = set((LAYOUT.unified.own_dir / "cgroup.controllers").read_text().split())
    absent = [c for c in ("pids", "memory", "cpu") if c not in offered]
    if not absent:
        pytest.skip(f"cgroup v2 offers memory, cpu and pids to {LAYOUT.unified.own_dir}: nothing to refuse")
    layout = cgroups.detect()
    layout.by_controller[absent[0]] = layout.unified
    limits = {"pids": parse_limits(pids_limit=8), "memory": parse_limits(memory="64m"), "cpu": parse_limits(cpus=1)}
    name = unique("labctl-t3-undelegated")
    with pytest.raises(LabError, match=f"controller\\(s\\) {absent[0]} are not delegated"):
        Cgroup.create(name, limits[absent[0]], layout=layout)
    assert not any((h.lab_dir / name).exists() for h in layout.hierarchies())


def test_busy_name_is_refused_and_left_alone():
    name = unique("labctl-t3-busy")
    with Cgroup.create(name) as first:
        with pytest.raises(LabError, match="already exists"):
            Cgroup.create(name)
        assert all(d.is_dir() for d in first.dirs.values())


# ---------------------------------------------------------------------------------------------
# The limits bite


@pytest.mark.parametrize("version", VERSIONS)
def test_memory_limit_triggers_oom_kill(version):
    needs("memory", version)
    run = experiments.memory_until_oom("64m", name=unique("labctl-t3-oom"))
    assert run.exit_status == -signal.SIGKILL
    assert run.oom_kills >= 1
    highest = max(s.memory_bytes or 0 for s in run.samples)
    assert highest <= 64 << 20
    assert highest >= 0.85 * (64 << 20), f"killed at {highest} bytes, well before the limit"
    assert run.peak_bytes is None or run.peak_bytes <= 64 << 20


def _measure_cpu(quota: float, attempts: int = 3):
    """Usage under the quota over a 2 s window. The machine is shared: a window in which the group was
    not throttled in most periods was limited by the neighbours, not by the quota, and is measured again."""
    for _ in range(attempts):
        run = experiments.cpu_under_quota(quota, seconds=2.0, name=unique("labctl-t3-cpu"))
        if run.periods and run.throttled_periods >= 0.8 * run.periods:
            break
    return run


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("quota", [0.25, 0.5, 1.0])
def test_cpu_usage_matches_quota_and_periods_are_throttled(version, quota):
    needs("cpu", version)
    needs("cpuacct", version) if version == 1 else None
    run = _measure_cpu(quota)
    assert abs(run.usage_cpus - quota) <= 0.2 * quota, f"used {run.usage_cpus:.3f} CPUs under --cpus {quota}"
    assert run.periods >= 15
    assert run.throttled_periods >= 0.8 * run.periods
    assert run.throttled_seconds > 0


@pytest.mark.parametrize("version", VERSIONS)
def test_fork_bomb_never_exceeds_pids_limit(version):
    needs("pids", version)
    run = experiments.fork_bomb(32, seconds=1.0, name=unique("labctl-t3-bomb"))
    counts = [s.pids_current for s in run.samples]
    assert max(counts) <= 32
    assert max(counts) >= 30, "the bomb never got near the limit"
    assert run.refused > 0                               # pids.events: forks refused with EAGAIN
    assert run.host_fork_ms_during < max(100.0, 20 * run.host_fork_ms_before)


# ---------------------------------------------------------------------------------------------
# Processes, cgroup v2 specifics, and leaving nothing behind


def test_process_started_in_cgroup_is_there_before_exec():
    with Cgroup.create(unique("labctl-t3-spawn"), parse_limits(pids_limit=8)) as cg:
        proc = cg.spawn(["sleep", "30"])
        try:
            mine = cgroups.cgroup_of(proc.pid)
            for h in LAYOUT.hierarchies():
                key = "" if h.version == 2 else hierarchy.V1_NAMES[next(iter(sorted(h.controllers)))]
                assert mine[key] == hierarchy.cgroup_path(h, h.lab_dir / cg.name)
            assert cg.pids() == [proc.pid]
            assert cg.stats().pids_current == 1
        finally:
            proc.kill()


@pytest.mark.skipif(LAYOUT.unified is None, reason="this host has no cgroup2 mount")
def test_v2_tree_tracks_processes_kills_them_and_counts_cpu():
    """Runs on the real cgroup v2 tree of any host that has one: on a hybrid host the lab's node in the
    (controller-less) unified hierarchy, on a pure-v2 host the lab's cgroup itself."""
    with Cgroup.create(unique("labctl-t3-v2"), parse_limits(pids_limit=16) if LAYOUT.version_of("pids") else None) as cg:
        node = cg.dirs[LAYOUT.unified.mountpoint]
        procs = [cg.popen(["sh", "-c", "while :; do :; done"]) for _ in range(2)]
        time.sleep(1.0)
        assert sorted(int(p) for p in read(node / "cgroup.procs").split()) == sorted(p.pid for p in procs)
        usage_us = int(dict(line.split() for line in read(node / "cpu.stat").splitlines())["usage_usec"])
        stats = cg.stats()
        assert usage_us > 0.3e6
        if stats.cpu_usage_ns is not None:  # v1 cpuacct on hybrid hosts, cpu.stat itself on v2: they agree
            assert abs(stats.cpu_usage_ns / 1e3 - usage_us) < 0.2 * usage_us
        assert (node / "cgroup.kill").exists()
        cg.kill_all()
        assert [p.wait(timeout=5) for p in procs] == [-signal.SIGKILL] * 2
        assert read(node / "cgroup.procs") == ""
        events = dict(line.split() for line in read(node / "cgroup.events").splitlines())
        assert events["populated"] == "0"
    assert not node.exists()


@pytest.mark.skipif(LAYOUT.unified is None, reason="this host has no cgroup2 mount")
def test_v2_leaf_move_and_return_on_the_real_tree():
    """The moves the v2 delegation makes, on the real cgroup v2 tree of any host (no controller needed):
    a cgroup's processes go into `labctl/supervisor` below it, and back when the lab is done."""
    unified = LAYOUT.unified
    base = unified.own_dir / unique("labctl-t3-v2base")   # a test cgroup beside labctl/, as a user's cgroup
    base.mkdir()
    sleeper = subprocess.Popen(["sleep", "60"], preexec_fn=lambda: hierarchy.write(base / "cgroup.procs", 0))
    h = hierarchy.Hierarchy(2, unified.mountpoint, frozenset(), hierarchy.cgroup_path(unified, base))
    leaf = h.lab_dir / hierarchy.SUPERVISOR_LEAF
    try:
        assert hierarchy.procs(base) == [sleeper.pid]
        h.lab_dir.mkdir()
        hierarchy.move_all(base, leaf)
        assert hierarchy.procs(base) == [] and hierarchy.procs(leaf) == [sleeper.pid]
        assert cgroups.cgroup_of(sleeper.pid)[""] == hierarchy.cgroup_path(unified, leaf)
        assert h.own_dir == base                            # seen from inside the leaf, the base is still `base`
        hierarchy.prune_lab_dir(h)
        assert hierarchy.procs(base) == [sleeper.pid] and not h.lab_dir.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
        for directory in (leaf, h.lab_dir, base):
            hierarchy.rmdir(directory)


def test_v2_supervisor_moves_into_a_leaf_and_back():
    h = needs("memory", 2)
    for controller in ("cpu", "pids"):
        needs(controller, 2)
    base = h.own_dir
    before_procs = read(base / "cgroup.procs")
    before_control = read(base / "cgroup.subtree_control")
    must_move = not h.is_root and not {"memory", "cpu", "pids"} <= set(before_control.split())
    with Cgroup.create(unique("labctl-t3-leaf"), parse_limits(memory="64m", cpus="0.5", pids_limit=16)) as cg:
        assert {"memory", "cpu", "pids"} <= set(read(base / "cgroup.subtree_control").split())
        assert {"memory", "cpu", "pids"} <= set(read(h.lab_dir / "cgroup.subtree_control").split())
        assert {"memory", "cpu", "pids"} <= set(read(cg.path("memory") / "cgroup.controllers").split())
        if must_move:
            assert read(base / "cgroup.procs") == ""   # the no-internal-processes rule holds
            leaf = h.lab_dir / hierarchy.SUPERVISOR_LEAF
            assert str(os.getpid()) in read(leaf / "cgroup.procs").split()
            assert cgroups.cgroup_of("self")[""] == hierarchy.cgroup_path(h, leaf)
    if must_move:
        assert str(os.getpid()) in read(base / "cgroup.procs").split()
        assert read(base / "cgroup.subtree_control") == before_control
        assert not h.lab_dir.exists()
    assert set(before_procs.split()) <= set(read(base / "cgroup.procs").split()) | _dead(before_procs)


def _dead(pids: str) -> set[str]:
    return {p for p in pids.split() if not Path(f"/proc/{p}").exists()}


def test_all_cgroups_removed_after_use():
    name = unique("labctl-t3-gone")
    had_lab_dirs = {h.mountpoint: h.lab_dir.exists() for h in LAYOUT.hierarchies()}
    with Cgroup.create(name, parse_limits(memory="32m", pids_limit=8)) as cg:
        proc = cg.popen(["sleep", "60"])
        dirs = list(cg.dirs.values())
        assert all(d.is_dir() for d in dirs)
    assert proc.wait(timeout=5) == -signal.SIGKILL      # remove() killed what was left inside
    assert not any(d.exists() for d in dirs)
    for h in LAYOUT.hierarchies():
        if not had_lab_dirs[h.mountpoint] and h.lab_dir.exists():
            assert [p.name for p in h.lab_dir.iterdir() if p.is_dir()], "an empty labctl/ node was left behind"


CYCLE = """
import time
from labctl.kernel.cgroups import Cgroup, parse_limits
with Cgroup.create({name!r}, parse_limits(memory="64m", cpus="0.5", pids_limit=32, cpu_shares=512)) as cg:
    proc = cg.popen(["sh", "-c", "sleep 0.2"])
    proc.wait()
    cg.stats()
    cg.kill_all()
"""


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (vagrant/provision.sh installs it)")
def test_nothing_is_written_outside_the_lab_subtree(tmp_path):
    """strace every open-for-writing, mkdir and rmdir of a whole create/limit/add/kill/remove cycle."""
    log = tmp_path / "strace.log"
    snapshot = {p: p.read_bytes() for h in LAYOUT.hierarchies() for p in h.own_dir.iterdir()
                if re.search(r"limit_in_bytes$|\.max$|shares$|cfs_.*_us$|weight$|subtree_control$|_device$", p.name)}
    assert snapshot
    subprocess.run(["strace", "-f", "-qq", "-o", str(log), "-e", "trace=openat,open,mkdir,mkdirat,rmdir,unlinkat,rename,renameat",
                    sys.executable, "-c", CYCLE.format(name=unique("labctl-t3-audit"))], check=True, cwd=REPO)
    allowed = [str(h.lab_dir) for h in LAYOUT.hierarchies()]
    # cgroup v2 delegation writes the own cgroup's subtree_control and moves its processes (hierarchy.py)
    v2_own = [str(h.own_dir / f) for h in LAYOUT.hierarchies() if h.version == 2 for f in ("cgroup.subtree_control",
                                                                                          "cgroup.procs")]
    writes = []
    for line in log.read_text().splitlines():
        match = re.search(r'(openat|open|mkdir|mkdirat|rmdir|unlinkat|rename|renameat)\((?:AT_FDCWD, )?"(/sys/fs/cgroup[^"]*)"(.*)', line)
        if not match:
            continue
        call, path, rest = match.groups()
        if call in ("openat", "open") and not re.search(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC", rest):
            continue
        writes.append(path)
        assert any(path == a or path.startswith(a + "/") for a in allowed) or path in v2_own, \
            f"{call} {path}: outside the lab's subtree"
    assert any(p.endswith("cgroup.procs") for p in writes) and any("memory" in p or "pids.max" in p for p in writes)
    for path, content in snapshot.items():
        assert path.read_bytes() == content, f"{path} changed"


def test_sigkill_mid_way_then_cleanup_removes_the_cgroup(tmp_path):
    name = unique("labctl-t3-crash")
    script = ("import sys, time\nfrom labctl.kernel.cgroups import Cgroup, parse_limits\n"
              f"cg = Cgroup.create({name!r}, parse_limits(memory='32m', pids_limit=8))\n"
              "cg.popen(['sleep', '600'])\nprint('ready', flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout.readline().strip() == "ready"
    finally:
        proc.kill()
        proc.wait()
    dirs = [h.lab_dir / name for h in LAYOUT.hierarchies()]
    assert all(d.is_dir() for d in dirs)
    orphans = [pid for pid in hierarchy.procs(dirs[0])]
    assert len(orphans) == 1                             # the sleep outlived its parent, inside the cgroup
    result = run_labctl("cleanup")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not any(d.exists() for d in dirs)
    assert not Path(f"/proc/{orphans[0]}").exists() or open(f"/proc/{orphans[0]}/stat").read().split(")")[1].split()[0] == "Z"


def test_cgroup_run_command_passes_on_the_oom_kill():
    result = run_labctl("cgroup", "run", "-m", "32m", "--pids-limit", "16", "--name", unique("labctl-t3-cli"), "--",
                        sys.executable, "-c", "x = bytearray(256 << 20)")
    assert result.returncode == 128 + signal.SIGKILL, result.stdout + result.stderr
    assert "OOM kills 1" in result.stdout


def test_cgroup_run_of_a_missing_command_is_one_line_and_leaves_no_cgroup():
    name = unique("labctl-t3-missing")
    result = run_labctl("cgroup", "run", "--name", name, "--", "/nonexistent-command")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot run '/nonexistent-command'" in result.stderr and "Traceback" not in result.stderr
    left = [os.path.join(root, d) for root, dirs, _ in os.walk("/sys/fs/cgroup") for d in dirs if d == name]
    assert left == []


# ---------------------------------------------------------------------------------------------
# The step: demo, check, exercise


def test_check_fails_on_skeleton_with_a_hint():
    result = run_labctl("check", "3")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "/cgroup puts the command in memory cgroup" in result.stdout
    assert "TODO 1" in result.stdout


def test_check_passes_on_reference():
    result = run_labctl("check", "3", "--reference")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the memory limit bites" in result.stdout and "the pids limit bites" in result.stdout


def test_check_passes_on_a_completed_exercise(tmp_path):
    """The student's parts of steps 1 and 3 (the reference parts, taken as `labctl lab take N` does)."""
    result = run_labctl("check", "3", env=student_lab(tmp_path, take=[1, 3]))
    assert result.returncode == 0, result.stdout + result.stderr


def test_step_3_demo_runs():
    started = time.monotonic()
    result = run_labctl("step", "3", "--no-explain")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "oom_kill = 1" in result.stdout and "pids.current never went above 32" in result.stdout
    assert time.monotonic() - started < 30


def _undelegated_v2_controllers() -> set[str]:
    h = LAYOUT.unified
    if h is None or not h.controllers:
        return set()
    offered = set((h.own_dir / "cgroup.controllers").read_text().split())
    return {"memory", "cpu", "pids"} & set(h.controllers) - offered


@pytest.mark.skipif(not _undelegated_v2_controllers() or os.environ.get("LABCTL_DELEGATED_SCOPE") == "1"
                    or shutil.which("systemd-run") is None,
                    reason="not needed here: either this host's cgroup v2 holds no memory/cpu/pids controller, or they "
                           "are delegated to this process's cgroup already (the v2 cases run directly), or there is "
                           "no systemd-run")
def test_v2_cases_pass_in_a_delegated_systemd_scope():
    """Where systemd has not delegated cpu/memory/pids to our cgroup (a plain ssh session, say), run the
    v2 cases again in a scope with Delegate=yes, as the error message tells a student to."""
    result = subprocess.run(["systemd-run", "--scope", "-p", "Delegate=yes", "--quiet",
                             sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                             str(Path(__file__)), "-k", "v2"],
                            cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "LABCTL_DELEGATED_SCOPE": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "passed" in result.stdout and " failed" not in result.stdout
