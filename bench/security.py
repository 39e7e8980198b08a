"""Benchmark (step 9): what the security profile costs.

    sudo .venv/bin/python bench/security.py                 # 1 MB dd, 5 runs; 30 rounds of /bin/true
    sudo .venv/bin/python bench/security.py --count 200000 --runs 3 --rounds 10

1. The seccomp filter per system call: `dd if=/dev/zero of=/dev/null bs=1 count=N` (two calls per byte),
   labctl with Docker's default profile vs --security-opt seccomp=unconfined, and runc with the same
   profile in its config.json vs `runc spec`'s config (no filter); labctl.demos.seccompcost explains the
   method. Each runtime's ratio filtered / unfiltered is the figure to read.
2. Start time of `labctl run --rm busybox /bin/true`: with the default profile (capabilities, seccomp,
   no_new_privs, masked paths, devices) against `--privileged` (none of it, as every container was before
   step 9), and runc's `runc spec` with and without the filter; interleaved, in a shuffled order each round.
Medians and ratios: this machine is shared and noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def start_times(rounds: int) -> dict[str, list[float]]:
    from labctl import state
    from labctl.demos.seccompcost import oci_seccomp
    from labctl.images.labimage import busybox_rootfs_path
    from labctl.security import capabilities
    labctl = shutil.which("labctl") or str(Path(sys.executable).parent / "labctl")
    bundles = {}
    for filtered in (False, True):
        bundle = state.new_tmpdir("bench-sec-")
        subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True, capture_output=True)
        config = json.loads((bundle / "config.json").read_text())
        config["root"]["path"] = str(busybox_rootfs_path())
        config["process"].update(terminal=False, args=["/bin/true"])
        if filtered:
            config["linux"]["seccomp"] = oci_seccomp(list(capabilities.DEFAULT))
        (bundle / "config.json").write_text(json.dumps(config))
        bundles[filtered] = bundle
    commands = {
        "labctl run (default profile)": [labctl, "run", "--rm", "busybox", "/bin/true"],
        "labctl run --privileged": [labctl, "run", "--rm", "--privileged", "busybox", "/bin/true"],
        "labctl run seccomp=unconfined": [labctl, "run", "--rm", "--security-opt", "seccomp=unconfined",
                                          "busybox", "/bin/true"],
        "runc run (runc spec)": ["runc", "run", "--bundle", str(bundles[False])],
        "runc run + Docker's seccomp": ["runc", "run", "--bundle", str(bundles[True])],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    try:
        for i in range(rounds):
            order = list(commands.items())
            random.shuffle(order)
            for name, argv in order:
                argv = argv + ([f"bench-sec-{os.getpid()}-{i}"] if argv[0] == "runc" else [])
                started = time.perf_counter()
                done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True)
                times[name].append(time.perf_counter() - started)
                if done.returncode != 0:
                    raise SystemExit(f"{name} failed: {done.stderr.decode()[-300:]}")
    finally:
        for bundle in bundles.values():
            shutil.rmtree(bundle, ignore_errors=True)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000, help="bytes dd copies one at a time")
    parser.add_argument("--runs", type=int, default=5, help="runs of each dd variant")
    parser.add_argument("--rounds", type=int, default=30, help="rounds of the start-time comparison")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    from labctl.demos import seccompcost
    costs = seccompcost.measure(count=args.count, runs=args.runs)
    print(f"\n1. The seccomp filter per system call (dd bs=1 count={args.count:,}, {args.runs} runs, medians)")
    base = {c.runtime: c.ns_per_call for c in costs if not c.filtered}
    for c in costs:
        ratio = f"x{c.ns_per_call / base[c.runtime]:.2f}" if c.filtered and base[c.runtime] else ""
        print(f"   {c.runtime:7} {'filter' if c.filtered else 'none':6} {c.ns_per_call:7.0f} ns/call "
              f"(min {c.low:.0f}, max {c.high:.0f}) {ratio}")
    times = start_times(args.rounds)
    print(f"\n2. Start to exit of /bin/true ({args.rounds} rounds, interleaved, medians)")
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    for name, ms in medians.items():
        print(f"   {name:32} {ms:7.1f} ms")
    profile = medians["labctl run (default profile)"] / medians["labctl run --privileged"]
    runc = medians["runc run + Docker's seccomp"] / medians["runc run (runc spec)"]
    print(f"\n   the profile costs labctl x{profile:.3f}; the same filter costs runc x{runc:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"costs": [c.__dict__ for c in costs], "start_ms": medians}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
