"""Benchmark (step 10): create + start + delete of one bundle by labctl-runtime, runc and crun.

    sudo .venv/bin/python bench/oci.py                  # 10 rounds
    sudo .venv/bin/python bench/oci.py --rounds 30 --json out.json

The bundle is `labctl bundle busybox DIR /bin/true` (Docker's profile: 14 capabilities, the seccomp
filter, masked paths, no_new_privs). Each round runs the three runtimes in a shuffled order, each
through its command line as containerd's shim does: `create`, `start`, wait until `state` says stopped,
`delete`. Medians per phase and of the sum, and each runtime's ratio to runc: this machine is shared.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def measure(rounds: int) -> dict[str, dict[str, list[float]]]:
    from labctl.demos import ocicompare
    from labctl.runtime import peers
    names = peers.available()
    times = {n: {"create": [], "start": [], "delete": []} for n in names}
    with tempfile.TemporaryDirectory(prefix="labctl-bench-oci-") as tmp:
        bundle = ocicompare.make_bundle(Path(tmp) / "bundle", ["/bin/true"])
        for _ in range(rounds):
            for name in random.sample(names, len(names)):
                for phase, values in ocicompare.time_phases(bundle, name, repeat=1).items():
                    times[name][phase] += values
    return times


def report(times: dict[str, dict[str, list[float]]]) -> None:
    total = {n: statistics.median(sum(v) for v in zip(*t.values())) for n, t in times.items()}
    print(f"{'runtime':10} {'create':>9} {'start':>9} {'delete':>9} {'total':>9} {'vs runc':>8}")
    for name, phases in times.items():
        cells = " ".join(f"{statistics.median(v) * 1000:7.1f}ms" for v in phases.values())
        ratio = total[name] / total["runc"] if "runc" in total else float("nan")
        print(f"{name:10} {cells} {total[name] * 1000:7.1f}ms {ratio:7.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", help="write the raw times here")
    args = parser.parse_args()
    times = measure(args.rounds)
    report(times)
    if args.json:
        Path(args.json).write_text(json.dumps(times, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
