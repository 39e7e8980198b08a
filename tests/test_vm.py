"""The VM tier: the lab on the classroom's kernel (Debian 12: pure cgroup v2, 6.1, kprobes), under QEMU.

This host has hybrid cgroups, a 6.18 kernel and no kprobes; the classroom VM is pure cgroup v2. The code
paths only the VM takes (cgroup v2 above all) run here: the module boots the lab image
(vagrant/build-image.sh, cached by a hash of its inputs), copies this working tree in, re-provisions it,
and runs `labctl doctor`, the tour and the kernel tests (vagrant/labvm.py: GUEST_TEST_FILES) inside the
guest. Their results are these tests' results; the guest's output is shown in the run's output.

Skipped, with the reason, where QEMU cannot be installed, and on a host that is itself pure cgroup v2
(there the same tests ran natively in this run). `pytest -m vm` runs this tier alone,
`pytest -m "not vm"` leaves it out. The VM and everything in it are gone when the module ends.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import SESSION_PIDS

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "vagrant"))
import labvm  # noqa: E402

pytestmark = [pytest.mark.vm, pytest.mark.root]

#: Caps in seconds, so the tier fits CI's 90 minutes next to the host suite.
GUEST_TESTS_TIMEOUT = int(os.environ.get("LABCTL_VM_TEST_TIMEOUT", "1800"))
TOUR_TIMEOUT = 900
JUPYTER_TIMEOUT = 1500
GUEST_ARTIFACTS = "/tmp/labctl-artifacts"
TIMINGS: dict[str, float] = {}


def _say(capsys, text: str) -> None:
    """Print into the run's output even under pytest -q (CI shows it)."""
    with capsys.disabled():
        for line in text.splitlines():
            print(f"[vm] {line}", flush=True)


def _host_is_pure_cgroup_v2() -> bool:
    return _fstype("/sys/fs/cgroup") == "cgroup2"


def _fstype(path: str) -> str:
    best = ("", "")
    with open("/proc/self/mounts") as f:
        for line in f:
            _, mountpoint, fstype, *_ = line.split()
            if (path + "/").startswith(mountpoint.rstrip("/") + "/") and len(mountpoint) >= len(best[0]):
                best = (mountpoint, fstype)
    return best[1]


@pytest.fixture(scope="module")
def guest():
    if _host_is_pure_cgroup_v2():
        pytest.skip("this host is itself pure cgroup v2: the kernel tests ran natively in this run")
    started = time.monotonic()
    try:
        image = labvm.build_image()
    except labvm.VMError as exc:
        if not shutil.which(labvm.QEMU):
            pytest.skip(f"QEMU cannot be installed on this host ({exc}): the VM tier cannot run")
        raise
    TIMINGS["image build"] = time.monotonic() - started
    with labvm.GuestVM(image) as vm:
        SESSION_PIDS.add(vm.qemu.pid)
        TIMINGS["boot to ssh"] = vm.boot_seconds
        started = time.monotonic()
        vm.copy_tree(REPO)
        vm.provision()
        TIMINGS["copy tree + provision.sh"] = time.monotonic() - started
        yield vm
        SESSION_PIDS.discard(vm.qemu.pid)


def test_guest_is_pure_cgroup_v2_with_kprobes(guest, capsys):
    out = guest.run("uname -r; stat -fc %T /sys/fs/cgroup; cat /sys/fs/cgroup/cgroup.controllers; "
                    "test -e /sys/kernel/tracing/kprobe_events && echo kprobes", check=True).stdout.split("\n")
    release, fstype, controllers = out[0], out[1], out[2].split()
    _say(capsys, f"guest kernel {release}; /sys/fs/cgroup is {fstype} "
                 f"({'pure cgroup v2' if fstype == 'cgroup2fs' else 'NOT v2'}); controllers: {' '.join(controllers)}; "
                 f"kprobes: {'yes' if 'kprobes' in out else 'no'}")
    _say(capsys, "timings so far: " + ", ".join(f"{k} {v:.0f} s" for k, v in TIMINGS.items()))
    assert fstype == "cgroup2fs"
    assert {"cpu", "memory", "pids"} <= set(controllers)
    assert "kprobes" in out


def test_labctl_doctor_in_guest(guest, capsys):
    if not (REPO / "labctl" / "doctor.py").exists():
        pytest.skip("labctl/doctor.py is not in this tree yet")
    result = guest.run("cd /vagrant && labctl doctor", timeout=300)
    _say(capsys, "labctl doctor (guest):\n" + result.stdout)
    assert result.returncode == 0, result.stdout


def test_labctl_tour_in_guest(guest, capsys):
    started = time.monotonic()
    result = guest.run("cd /vagrant && export LABCTL_STATE_DIR=$(mktemp -d) && labctl tour --no-explain; "
                       "status=$?; labctl cleanup >/dev/null; exit $status", timeout=TOUR_TIMEOUT)
    TIMINGS["tour"] = time.monotonic() - started
    _say(capsys, f"labctl tour (guest), {TIMINGS['tour']:.0f} s, exit {result.returncode}:\n"
                 + "\n".join(result.stdout.splitlines()[-15:]))
    assert result.returncode == 0, result.stdout[-4000:]


def test_kernel_tests_pass_in_guest(guest, capsys):
    args = labvm.guest_test_args(REPO)
    _say(capsys, f"guest: pytest {' '.join(args)} (timeout {GUEST_TESTS_TIMEOUT} s)")
    started = time.monotonic()
    quoted = " ".join(f"'{a}'" for a in args)
    result = guest.run(f"cd /vagrant && timeout -s INT {GUEST_TESTS_TIMEOUT} .venv/bin/python -m pytest "
                       f"-p no:cacheprovider -v -rfEs --durations=5 --junitxml=/tmp/guest-junit.xml {quoted}",
                       timeout=GUEST_TESTS_TIMEOUT + 120, stream=lambda line: _say(capsys, "guest | " + line))
    TIMINGS["guest tests"] = time.monotonic() - started
    junit = guest.run("cat /tmp/guest-junit.xml", timeout=60).stdout
    cases = _junit_cases(junit)
    counts = {k: sum(1 for c in cases if c[1] == k) for k in ("passed", "failed", "skipped")}
    _say(capsys, f"guest tests: {counts['passed']} passed, {counts['failed']} failed, "
                 f"{counts['skipped']} skipped in {TIMINGS['guest tests']:.0f} s (pytest exit {result.returncode})")
    _say(capsys, "VM tier timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in TIMINGS.items()))
    # The cases parametrized for cgroup v2 ("...[v2]", "...[0.5-v2]") skip on this host: here they must run.
    v2_skipped = [f"{name}: {why}" for name, outcome, why in cases
                  if outcome == "skipped" and re.search(r"[\[-]v2\]$", name)]
    failed = [f"{name}: {why[:300]}" for name, outcome, why in cases if outcome == "failed"] \
        or ["see the [vm] guest | lines (no report: the run was cut)"]
    assert result.returncode == 0, f"pytest in the guest exited {result.returncode}; failed: {failed}"
    assert counts["passed"] > 0
    assert not v2_skipped, f"cgroup v2 tests skipped on the pure-v2 guest: {v2_skipped}"


#: runtime-tools' programs (step 10) that meet what the guest does differently: devices through a BPF
#: program (cgroup v2), user namespaces, seccomp, masked and read-only paths, sysctl, rlimits, mounts,
#: capabilities, the namespaces. Its cgroup programs are not here: they look for cgroup v1 hierarchies
#: ("find memory cgroup") and fail on pure cgroup v2 for runc and labctl alike. In the guest labctl must
#: pass every one runc passes there (tests/test_oci_validation.py runs the whole suite on this host).
GUEST_PROGRAMS = ["default", "linux_devices", "linux_uid_mappings", "linux_seccomp", "linux_masked_paths",
                  "linux_readonly_paths", "linux_sysctl", "process_rlimits", "process_capabilities",
                  "linux_ns_path", "mounts", "root_readonly_true"]


def test_runtime_tools_programs_pass_in_guest_as_with_runc(guest, capsys):
    from test_oci_validation import BUILD, DEVIATIONS, SHARED
    if not (SHARED / "run-suite").exists():
        pytest.skip(f"runtime-tools is not at {SHARED} (set OCI_RUNTIME_TOOLS)")
    built = subprocess.run([str(REPO / "tests/oci/build-runtime-tools.sh"), str(BUILD)], capture_output=True, text=True)
    if built.returncode != 0:
        pytest.skip(f"runtime-tools could not be built: {built.stderr.strip()[-300:]}")
    guest.copy_files(BUILD / "tree", ["runtimetest", "oci-runtime-tool", "rootfs-amd64.tar.gz",
                                      *(f"validation/{n}/{n}.t" for n in GUEST_PROGRAMS)], "/opt/oci-rt/tree")
    guest.copy_files(SHARED, ["run-suite"], "/opt/oci-rt")
    started, results = time.monotonic(), {}
    for label, runtime in (("labctl", "/vagrant/.venv/bin/labctl-runtime"), ("runc", "runc")):
        # a mount namespace and a TMPDIR of the suite's own, as on the host: nothing stays in the guest
        ran = guest.run(f"tmp=$(mktemp -d) && TMPDIR=$tmp unshare --mount --propagation private -- python3 "
                        f"/opt/oci-rt/run-suite {runtime} /opt/oci-rt --json /tmp/rt-{label}.json "
                        f"--only {','.join(GUEST_PROGRAMS)} --timeout 300; rm -rf $tmp",
                        timeout=1800, stream=lambda line: _say(capsys, f"guest | {label}: {line}"))
        assert ran.returncode == 0, ran.stdout[-2000:]
        results[label] = json.loads(guest.run(f"cat /tmp/rt-{label}.json", timeout=60, check=True).stdout)["results"]
    TIMINGS["runtime-tools"] = time.monotonic() - started
    passed = {label: {n for n, r in found.items() if r["passed"]} for label, found in results.items()}
    _say(capsys, f"runtime-tools programs in the guest: labctl {len(passed['labctl'])}, "
                 f"runc {len(passed['runc'])} of {len(GUEST_PROGRAMS)}")
    assert set(results["labctl"]) == set(GUEST_PROGRAMS), "every program ran"
    missing = passed["runc"] - passed["labctl"] - set(DEVIATIONS)
    assert not missing, {n: results["labctl"][n] for n in missing}
    assert passed["runc"], f"runc passed none of them in the guest, so the comparison proves nothing: {results['runc']}"


def test_jupyter_in_a_browser_in_guest(guest, capsys):
    """tests/test_jupyter.py in the guest, against the VM's own labctl-jupyter.service: the token made at
    this boot refuses requests without it, Jupyter listens on 127.0.0.1 only, and headless chromium runs
    a notebook to its figure. The screenshots come back to $LABCTL_ARTIFACTS/vm (default /tmp/labctl-artifacts)."""
    # The image the guest booted from carries no token: every VM makes its own.
    disk = guest.image / "disk.raw"
    probe = subprocess.run(["debugfs", "-R", "stat /etc/labctl/jupyter-token", str(disk)],
                           capture_output=True, text=True)
    assert "File not found" in probe.stderr, f"the image holds a Jupyter token: {probe.stdout[:300]}"
    started = time.monotonic()
    result = guest.run(f"cd /vagrant && rm -rf {GUEST_ARTIFACTS} && LABCTL_JUPYTER_SERVICE=1 "
                       f"LABCTL_ARTIFACTS={GUEST_ARTIFACTS} timeout -s INT {JUPYTER_TIMEOUT} .venv/bin/python -m pytest "
                       f"-p no:cacheprovider -v -rfEs --junitxml=/tmp/jupyter-junit.xml tests/test_jupyter.py",
                       timeout=JUPYTER_TIMEOUT + 120, stream=lambda line: _say(capsys, "guest | " + line))
    TIMINGS["jupyter in a browser"] = time.monotonic() - started
    host_dir = Path(os.environ.get("LABCTL_ARTIFACTS", "/tmp/labctl-artifacts")) / "vm"
    shots = guest.fetch_dir(GUEST_ARTIFACTS, host_dir)
    _say(capsys, f"jupyter in a browser (guest): {TIMINGS['jupyter in a browser']:.0f} s, exit {result.returncode}; "
                 f"screenshots: {', '.join(map(str, shots)) or 'none'}")
    cases = _junit_cases(guest.run("cat /tmp/jupyter-junit.xml", timeout=60).stdout)
    assert result.returncode == 0, f"tests/test_jupyter.py failed in the guest: see the [vm] guest | lines"
    assert cases and all(outcome == "passed" for _, outcome, _ in cases), cases
    assert any(p.name == "jupyter-01-namespaces.png" for p in shots), shots


def _junit_cases(text: str) -> list[tuple[str, str, str]]:
    """(test id, passed/failed/skipped, message) for each test case of a JUnit XML report."""
    if "<testsuite" not in text:
        return []
    cases = []
    for case in ET.fromstring(text[text.index("<"):]).iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        for outcome in ("failure", "error", "skipped"):
            node = case.find(outcome)
            if node is not None:
                cases.append((name, "skipped" if outcome == "skipped" else "failed", node.get("message", "")))
                break
        else:
            cases.append((name, "passed", ""))
    return cases
