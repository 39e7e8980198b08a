"""Benchmark (step 11): `/bin/true` in busybox, through labctl's daemon and without it, side by side
(interleaved, shuffled each round):

    docker run --rm (labctl's daemon)   the docker 20.10 CLI -> REST over the Unix socket -> the daemon
    labctl --host run --rm              labctl's lean client (client/remote.py) -> the same daemon
    labctl run --rm (one-shot)          no daemon: the CLI does it all itself (the launcher, python -S)
    runc run                            the same busybox rootfs as a runc bundle (bench/run.py's)

    sudo .venv/bin/python bench/daemon.py [--rounds 30]

Prints medians, p10/p90 and each median's ratio to runc's, and the idle daemon's memory (PSS).
The daemon runs on a socket and state directory of the benchmark's own, and is stopped at the end.
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
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import REPO, make_bundle, pss_kib, timed   # noqa: E402  (bench/run.py, beside this file)

DOCKER = "/usr/bin/docker"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    work = Path(tempfile.mkdtemp(prefix="labctl-bench-daemon-"))
    env = dict(os.environ, LABCTL_STATE_DIR=str(work / "state"))
    socket_path = str(work / "labctl.sock")
    from labctl import launcher
    launcher.install(work / "labctl", python=sys.executable, repo=str(REPO))
    labctl = [str(work / "labctl")]
    subprocess.run(labctl + ["daemon", "start", "--socket", socket_path], env=env, check=True, capture_output=True)
    try:
        os.environ["LABCTL_STATE_DIR"] = env["LABCTL_STATE_DIR"]
        from labctl.images.labimage import ensure_busybox_rootfs
        bundle = make_bundle(ensure_busybox_rootfs(), work)
        subprocess.run(labctl + ["prepare"], env=env, check=True, capture_output=True)
        docker_env = dict(env, DOCKER_HOST=f"unix://{socket_path}", DOCKER_CONFIG=str(work))
        counter = iter(range(10**9))
        commands = {
            "docker run --rm (daemon)": ([DOCKER, "run", "--rm", "busybox", "/bin/true"], docker_env),
            "labctl --host run --rm": (labctl + ["--host", f"unix://{socket_path}", "run", "--rm", "busybox",
                                                 "/bin/true"], env),
            "labctl run --rm (one-shot)": (labctl + ["run", "--rm", "busybox", "/bin/true"], env),
            "runc run": (None, env),
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for round_number in range(args.warmup + args.rounds):
            order = list(commands)
            random.shuffle(order)
            for name in order:
                argv, e = commands[name]
                if argv is None:
                    argv = ["runc", "--root", str(work / "runc"), "run", "-b", str(bundle), f"b{next(counter)}"]
                elapsed, _ = timed(argv, e)
                if round_number >= args.warmup:
                    times[name].append(elapsed)
        runc = statistics.median(times["runc run"])
        print(f"/bin/true in busybox, {args.rounds} interleaved rounds (wall time, ms)")
        print(f"{'path':30} {'median':>8} {'p10':>8} {'p90':>8} {'vs runc':>8}")
        for name, values in times.items():
            values.sort()
            med = statistics.median(values)
            print(f"{name:30} {med * 1000:8.1f} {values[len(values) // 10] * 1000:8.1f} "
                  f"{values[(len(values) * 9) // 10] * 1000:8.1f} {med / runc:7.2f}x")
        with open(socket_path[:-5] + ".pid") as f:
            pss, rss = pss_kib(json.load(f)["pid"])
        print(f"idle daemon: PSS {pss / 1024:.1f} MiB, RSS {rss / 1024:.1f} MiB")
    finally:
        subprocess.run(labctl + ["daemon", "stop", "--socket", socket_path], env=env, capture_output=True)
        subprocess.run(labctl + ["cleanup", "--all"], env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
