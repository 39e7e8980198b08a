"""The CLI as a user meets it: help, errors as one line, doctor, tour, and cleanup after a SIGKILL."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import run_labctl
from labctl.images import labimage
from labctl import state

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.root(False)
def test_help_is_fast_and_lists_examples():
    times = []
    for _ in range(5):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "labctl", "--help"], capture_output=True, text=True)
        times.append(time.perf_counter() - start)
    assert out.returncode == 0 and "examples:" in out.stdout
    assert min(times) < 0.2, f"labctl --help took {min(times):.3f} s at best"
    for command in ("doctor", "step", "check", "tour", "cleanup", "steps"):
        sub = run_labctl(command, "--help")
        assert sub.returncode == 0 and "examples:" in sub.stdout, command


@pytest.mark.root(False)
def test_help_imports_no_heavy_module():
    code = "import sys; from labctl.client import main as cli; cli.build_parser(); print(sorted(m for m in sys.modules if m.split('.')[0] in ('rich', 'pyroute2', 'bcc', 'matplotlib', 'psutil')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def _one_line_error(result):
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert result.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("labctl: error:"), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.root(False)
def test_unknown_step_is_one_line():
    line = _one_line_error(run_labctl("step", "42"))
    assert "no step" in line and "labctl steps" in line
    line = _one_line_error(run_labctl("check", "banana"))
    assert "no step" in line


def test_not_root_is_one_line():
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             sys.executable, "-m", "labctl", "step", "1"],
                            capture_output=True, text=True, cwd=REPO)
    line = _one_line_error(result)
    assert "needs root" in line and "sudo" in line


def test_missing_busybox_is_one_line(tmp_path):
    env = dict(os.environ, LABCTL_STATE_DIR=str(tmp_path / "state"), LABCTL_BUSYBOX=str(tmp_path / "none"))
    line = _one_line_error(run_labctl("prepare", env=env))
    assert "busybox-static" in line


@pytest.mark.root(False)
def test_missing_rootfs_in_reference_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "labctl.steps.s02_rootfs", str(tmp_path), "true"],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "does not look like a root filesystem" in result.stderr and "Traceback" not in result.stderr


def test_every_reference_solution_fails_in_one_line():
    # a command that does not exist: the reference of step 1 cannot start it
    result = subprocess.run([sys.executable, "-m", "labctl.steps.s01_namespaces", "box", "no-such-command-xyz"],
                            capture_output=True, text=True)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "no-such-command-xyz" in lines[0], result.stderr


@pytest.mark.root(False)
def test_doctor_reports_this_hosts_cgroup_mode():
    result = run_labctl("doctor", "--json")
    rows = {r["requirement"]: r for r in json.loads(result.stdout)}
    mode_row = rows["cgroup mode"]
    with open("/proc/self/mountinfo") as f:
        fstypes = [line.split(" - ")[1].split()[0] for line in f]
    v1, v2 = "cgroup" in fstypes, "cgroup2" in fstypes
    expected = "hybrid" if v1 and v2 else ("v2" if v2 else "v1")
    assert mode_row["detail"].startswith(expected if expected != "v2" else "cgroup v2"), mode_row
    if expected == "hybrid":
        unified = Path("/sys/fs/cgroup/unified/cgroup.controllers").read_text().split()
        assert all(c in mode_row["detail"] for c in unified)
    # Exit status follows the rows: non-zero exactly when something needed is missing.
    assert (result.returncode != 0) == any(r["status"] == "fail" for r in rows.values())


def test_doctor_reports_missing_tracefs_with_the_fix():
    # In a private mount namespace, so the host's tracefs stays mounted for everyone else.
    script = f"umount /sys/kernel/tracing 2>/dev/null; exec {sys.executable} -m labctl doctor --json"
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                            capture_output=True, text=True, cwd=REPO)
    rows = {r["requirement"]: r for r in json.loads(result.stdout)}
    assert rows["tracefs"]["status"] == "fail"
    assert "mount -t tracefs" in rows["tracefs"]["fix"]
    assert result.returncode == 1


@pytest.mark.root(False)
def test_steps_lists_the_curriculum():
    result = run_labctl("steps")
    assert result.returncode == 0
    assert "namespaces" in result.stdout and "eBPF" in result.stdout


def test_tour_runs_the_available_steps():
    result = run_labctl("tour", "--no-explain", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Step 1" in result.stdout and "Step 2" in result.stdout and "Tour complete" in result.stdout


def _alive(pid: int, start_time: int) -> bool:
    return state.process_start_time(pid) == start_time and \
        Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_cleanup_after_sigkill_mid_step(tmp_path):
    """SIGKILL a running step while its container lives; prove the container outlives it and that
    `labctl cleanup` then removes everything the journal recorded."""
    journal = state.journal_dir()
    before = set(journal.glob("*.json"))
    step = subprocess.Popen([sys.executable, "-m", "labctl.steps.s02_rootfs",
                             str(labimage.ensure_busybox_rootfs()), "sleep", "300"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        records = []
        while time.monotonic() < deadline and not records:
            records = [json.loads(p.read_text()) for p in set(journal.glob("*.json")) - before]
            time.sleep(0.05)
        assert records, "the step never recorded its container"
        container = records[0]["data"]
        assert _alive(container["pid"], container["start_time"])
    finally:
        step.send_signal(signal.SIGKILL)
        step.wait()
    time.sleep(0.2)
    assert _alive(container["pid"], container["start_time"]), "nothing was left: the test would prove nothing"
    result = run_labctl("cleanup")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "removed process" in result.stdout
    assert not _alive(container["pid"], container["start_time"])
    assert set(journal.glob("*.json")) - before == set()


def test_cleanup_removes_what_a_crashed_pull_left_in_the_image_store_unless_a_writer_runs():
    """A pull killed mid-blob leaves incoming/blob-*, an import killed mid-unpack leaves tmp/layer-*/:
    `labctl cleanup` removes both; while a writer holds the store (shared lock) it leaves them alone."""
    from labctl.images.store import ImageStore
    store = ImageStore()
    blob = store.root / "incoming" / "blob-crashed"
    blob.write_bytes(b"half a layer")
    layer = store.root / "tmp" / "layer-crashed"
    (layer / "usr" / "bin").mkdir(parents=True)
    (layer / "usr" / "bin" / "tool").write_bytes(b"\x7fELF")
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time\nfrom labctl import state\n"
                               "with state.locked('image-store', shared=True):\n"
                               "    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        busy = run_labctl("cleanup")
        assert busy.returncode == 0, busy.stdout + busy.stderr
        assert "a pull or import is running" in busy.stdout
        assert blob.exists() and layer.is_dir()
    finally:
        holder.kill()
        holder.wait()
    result = run_labctl("cleanup")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not blob.exists() and not layer.exists()
    assert not any((store.root / "incoming").iterdir()) and not any((store.root / "tmp").iterdir())
    assert {"blobs", "layers"} <= {p.name for p in store.root.iterdir()}   # the store itself is untouched
