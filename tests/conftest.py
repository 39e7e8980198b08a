"""Shared fixtures, and the two tiers of the suite.

Most tests run against the real kernel, as root, and must leave nothing behind (`no_residue`). They say
so with the `root` marker: `pytestmark = pytest.mark.root` for a module of them, `@pytest.mark.root` for
one test, and `@pytest.mark.root(False)` for a test in such a module that needs no root (a parser, a
clear error given before anything is created). For any other user those are skipped, each with the
same reason, and the rest run: `pytest -m "not vm"` as a student, without sudo.
"""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ROOT_REASON = "needs root: it makes namespaces, mounts, cgroups, links or BPF programs (run pytest as root)"
IS_ROOT = os.geteuid() == 0


def pytest_configure(config):
    config.addinivalue_line("markers", "root: the test " + ROOT_REASON.partition(" (")[0] +
                            "; root(False): this test of a root module does not")


def needs_root(item: pytest.Item) -> bool:
    """The marker nearest the test decides: its own, else its class's, else its module's."""
    marker = item.get_closest_marker("root")
    return marker is not None and bool(marker.args[0] if marker.args else True)


def pytest_collection_modifyitems(config, items):
    if not IS_ROOT:
        for item in items:
            if needs_root(item):
                item.add_marker(pytest.mark.skip(reason=ROOT_REASON))


@pytest.fixture(scope="session", autouse=True)
def lab_state_dir(tmp_path_factory):
    """One state directory for the whole run, so the tests never touch a user's /var/lib/labctl."""
    path = tmp_path_factory.mktemp("labctl-state")
    os.environ["LABCTL_STATE_DIR"] = str(path)
    # nor a student's progress record (every `labctl check` writes one), nor the class's settings
    course = tmp_path_factory.mktemp("labctl-course")
    os.environ["LABCTL_PROGRESS_FILE"] = str(course / "progress.json")
    os.environ["LABCTL_CLASS_FILE"] = str(course / "class.toml")
    yield path


def lab_objects(state_dir: Path) -> dict[str, set[str]]:
    """Everything on the host that looks like the lab's: what the residue check compares."""
    found: dict[str, set[str]] = {}
    with open("/proc/self/mountinfo") as f:
        found["mounts"] = {line.split()[4] for line in f
                           if str(state_dir) in line.split()[4] or " - overlay " in line}
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    found["links"] = {l.split(": ")[1].split("@")[0] for l in links.splitlines()
                      if l.split(": ")[1].startswith("lab")}
    netns = Path("/run/netns")
    found["netns"] = {p.name for p in netns.iterdir() if p.name.startswith("lab")} if netns.is_dir() else set()
    found["cgroups"] = _cgroups()
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout \
        if subprocess.run(["which", "nft"], capture_output=True).returncode == 0 else ""
    found["nftables"] = {t for t in tables.splitlines() if "labctl" in t}
    found["processes"] = {f"{c.pid} {' '.join(c.cmdline()[:3])}" for c in _children()}
    found["cluster processes"] = _cluster_processes(state_dir)
    run_cluster = Path("/run/labctl/cluster")   # step 13: the cluster hosts' sockets and PID files
    found["cluster sockets"] = {str(p) for p in run_cluster.iterdir()} if run_cluster.is_dir() else set()
    oci_root = Path("/run/labctl-runtime")   # labctl-runtime's default --root: a container's state directory
    found["labctl-runtime state"] = {str(p) for p in oci_root.iterdir()} if oci_root.is_dir() else set()
    found["journal"] = {p.name for p in (state_dir / "journal").glob("*.json")} \
        if (state_dir / "journal").is_dir() else set()
    found["lock files"] = _lock_files(state_dir)
    images = state_dir / "images"   # what a pull or an import leaves half-written: its orphans
    found["image store orphans"] = {str(p) for sub in ("incoming", "tmp") if (images / sub).is_dir()
                                    for p in (images / sub).iterdir()}
    return found


def _cluster_processes(state_dir: Path) -> set[str]:
    """Processes of a lab cluster (step 13) started from this run: etcd (its data directory) and the
    hosts' daemons (their LABCTL_STATE_DIR), both under <state>/cluster. They are nobody's children
    once `labctl cluster up` has exited, so _children() does not see them."""
    mark = str(state_dir / "cluster").encode()
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            if mark in (proc / "cmdline").read_bytes() or mark in (proc / "environ").read_bytes():
                found.add(f"{proc.name} {(proc / 'cmdline').read_bytes().split(bytes(1))[0].decode()}")
    return found


def _cgroups() -> set[str]:
    """Every labctl* cgroup directory, and any directory below a labctl/ one (the levels of an OCI
    bundle's linux.cgroupsPath: labctl/testdir/cgrouptest/container)."""
    if not Path("/sys/fs/cgroup").is_dir():
        return set()
    found = {p for p in Path("/sys/fs/cgroup").glob("**/labctl*") if p.is_dir()}
    found |= {below for p in found if p.name == "labctl" for below in p.glob("**/*") if below.is_dir()}
    return {str(p) for p in found}


#: Lock files that each guard one shared, long-lived thing (the image store, a bridge's addresses, a
#: layer digest, which every store that unpacks that layer locks again): a set bounded by what exists,
#: not by how often labctl runs. Any other (one per container, say) must go with what it locks.
SHARED_LOCKS = re.compile(r"(image-store|image-refs|auth|rootfs-build|container-names|daemon-networks|network-.+|layer-[0-9a-f]+)\.lock")


def _lock_files(state_dir: Path) -> set[str]:
    """The lock files in <state>/locks/ but the shared ones."""
    locks = state_dir / "locks"
    return {p.name for p in locks.glob("*.lock") if not SHARED_LOCKS.fullmatch(p.name)} if locks.is_dir() else set()


def _children():
    """This process's living descendants, but those of a session helper (SESSION_PIDS): what a helper
    starts on its own (Jupyter's kernels, the npm its start-up runs) is the helper's, ended with it."""
    out = []
    helpers = set()
    for pid in SESSION_PIDS:
        with contextlib.suppress(psutil.Error):
            helpers |= {p.pid for p in psutil.Process(pid).children(recursive=True)}
    for child in psutil.Process().children(recursive=True):
        if child.pid in helpers:
            continue
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                child.cmdline()
                out.append(child)
        except psutil.Error:
            pass
    return out


#: PIDs of long-lived helpers that session fixtures start on purpose (a registry server, say).
SESSION_PIDS: set[int] = set()


@pytest.fixture(autouse=True)
def no_residue(request, lab_state_dir):
    """Fail any test that leaves a lab mount, link, netns, cgroup, nftables table, process, journal
    record, labctl-runtime state directory, lock file or half-written image store file behind. Objects
    that existed before the test are not blamed on it. Only as root: any other user's tests can make none of these (and could not list
    some of them)."""
    if not IS_ROOT:
        yield
        return
    before = lab_objects(lab_state_dir)
    yield
    after = lab_objects(lab_state_dir)
    left = {kind: sorted(after[kind] - before[kind]) for kind in after}
    left["processes"] = [p for p in left["processes"] if int(p.split()[0]) not in SESSION_PIDS]
    left = {k: v for k, v in left.items() if v}
    if left:
        # Clean up so one failure does not cascade into every later test, then fail this one.
        subprocess.run([sys.executable, "-m", "labctl", "cleanup", "--all"], capture_output=True)
        for child in _children():
            if child.pid not in SESSION_PIDS:
                child.kill()
        pytest.fail(f"the test left lab objects behind: {left}")
