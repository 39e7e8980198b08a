"""What a seccomp filter costs per system call (step 9's benchmark and plot), labctl beside runc.

The workload is `dd if=/dev/zero of=/dev/null bs=1 count=N`: a read(2) and a write(2) per byte, nothing
else, so almost all of its time is system calls, and each passes through the filter. One container run
with count=N and one with count=0 (the same start-up and teardown, no loop), interleaved; the cost of one
call is (t(N) - t(0)) / 2N. Each runtime runs with its filter and without:

  labctl   the default profile (Docker's) vs --security-opt seccomp=unconfined
  runc     `runc spec`'s config with the same profile in linux.seccomp (what dockerd writes into the
           bundle it hands to runc) vs the config as `runc spec` writes it, which has no filter

Medians, with min and max, because this machine is shared and noisy: the ratio filtered / unfiltered
of one runtime is what to read.
"""
from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from labctl import state


@dataclass
class Cost:
    runtime: str
    filtered: bool
    ns_per_call: float      # median
    low: float
    high: float
    calls: int              # system calls per run (2 x count)
    runs: int


def _dd(count: int) -> list[str]:
    return ["dd", "if=/dev/zero", "of=/dev/null", "bs=1", f"count={count}"]


def _labctl_runner(filtered: bool):
    from labctl.containers import lifecycle
    from labctl.security.profile import from_flags
    profile = from_flags(security_opt=[] if filtered else ["seccomp=unconfined"])

    def run(count: int) -> float:
        spec, image = lifecycle.build_spec("localhost/busybox:latest", _dd(count), auto_remove=True, security=profile)
        started = time.perf_counter()
        code, out = lifecycle.run_capture(spec, image)
        elapsed = time.perf_counter() - started
        if code != 0:
            raise RuntimeError(f"dd failed in labctl (exit {code}): {out[-200:]}")
        return elapsed
    return run


def oci_seccomp(capabilities: list[str]) -> dict:
    """Docker's default profile as the OCI runtime spec's linux.seccomp, for this machine and these
    capabilities: what dockerd writes into a bundle's config.json (runtime/oci.py converts it)."""
    from labctl.runtime.oci import seccomp_to_oci
    from labctl.security import seccomp
    return seccomp_to_oci(seccomp.default_profile(), capabilities)


def _runc_runner(filtered: bool):
    from labctl.images.labimage import busybox_rootfs_path
    from labctl.security import capabilities
    runc = shutil.which("runc")
    bundle = state.new_tmpdir("runc-cost-")
    subprocess.run([runc, "spec", "--bundle", str(bundle)], check=True, capture_output=True)
    config = json.loads((bundle / "config.json").read_text())
    config["root"]["path"] = str(busybox_rootfs_path())
    config["process"]["terminal"] = False
    if filtered:
        config["linux"]["seccomp"] = oci_seccomp(list(capabilities.DEFAULT))

    def run(count: int) -> float:
        config["process"]["args"] = _dd(count)
        (bundle / "config.json").write_text(json.dumps(config))
        name = f"{bundle.name}-{count}"
        started = time.perf_counter()
        done = subprocess.run([runc, "run", "--bundle", str(bundle), name], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        elapsed = time.perf_counter() - started
        subprocess.run([runc, "delete", "--force", name], capture_output=True)
        if done.returncode != 0:
            raise RuntimeError(f"dd failed in runc (exit {done.returncode}): {done.stderr[-200:]}")
        return elapsed
    run.bundle = bundle
    return run


def measure(count: int = 200_000, runs: int = 5, runtimes: tuple[str, ...] = ("labctl", "runc")) -> list[Cost]:
    """Cost per call of each runtime with and without its filter; every run of every variant interleaved
    with the others, so that a noisy moment hits all of them alike."""
    runners = {}
    try:
        for runtime in runtimes:
            for filtered in (False, True):
                runners[(runtime, filtered)] = (_labctl_runner if runtime == "labctl" else _runc_runner)(filtered)
        samples: dict = {key: [] for key in runners}
        for _ in range(runs):
            for key, run in runners.items():
                empty, full = run(0), run(count)
                samples[key].append(max(0.0, full - empty) / (2 * count) * 1e9)
        return [Cost(runtime, filtered, statistics.median(values), min(values), max(values), 2 * count, runs)
                for (runtime, filtered), values in samples.items()]
    finally:
        for run in runners.values():
            if hasattr(run, "bundle"):
                shutil.rmtree(Path(run.bundle), ignore_errors=True)
