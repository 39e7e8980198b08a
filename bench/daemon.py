"""Benchmark (step 11): `/bin/true` in busybox, through labctl's daemon and without it, side by side
(interleaved, shuffled each round):

    docker run --rm (labctl's daemon)   the docker 20.10 CLI -> REST over the Unix socket -> the daemon
    labctl --host run --rm              labctl's lean client (client/remote.py) -> the same daemon
    labctl run --rm (one-shot)          no daemon: the CLI does it all itself (the launcher, python -S)
    docker run --rm (Debian dockerd)    the same CLI -> Debian's dockerd 20.10 -> its containerd -> shim -> runc,
                                        busybox loaded from a `docker save` of the lab's image (bench/dockerd.py:
                                        private socket and roots, no bridge, no firewall rules)
    runc run                            the same busybox rootfs as a runc bundle (bench/run.py's)
    crun run                            the same bundle, under bench/run.py's `unshare -m` wrapper

    sudo .venv/bin/python bench/daemon.py [--rounds 30]

Every container runs with no network (`--network none`, labctl's default). Prints medians, p10/p90 and
each median's ratio to runc's, and the idle daemons' memory (PSS): labctl's daemon against dockerd plus
its containerd. Both daemons run on sockets and state directories of the benchmark's own and are stopped
at the end (also on an error or Ctrl-C); then the host is compared with a snapshot taken before.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dockerd import DOCKER, HostSnapshot, PrivateDockerd, Unavailable   # noqa: E402  (beside this file)
from run import REPO, make_bundle, pss_kib, timed   # noqa: E402  (bench/run.py)

DEBIAN_ROW = "docker run --rm (Debian dockerd)"


def start_dockerd(work: Path, labctl_docker_env: dict) -> tuple[PrivateDockerd, str | None]:
    """Debian's dockerd with the lab's busybox loaded into it, or the one-line reason it could not."""
    dockerd = PrivateDockerd(work)
    archive = work / "busybox.tar"
    saved = subprocess.run([DOCKER, "save", "-o", str(archive), "busybox"], env=labctl_docker_env,
                           capture_output=True, text=True)
    if saved.returncode != 0:
        return dockerd, f"`docker save busybox` from labctl's daemon failed: {saved.stderr.strip()[-200:]}"
    try:
        dockerd.start()
        loaded = dockerd.docker("load", "-i", str(archive)).split(": ", 1)[-1].strip()   # "Loaded image[ ID]: X"
        if loaded != "busybox:latest":
            dockerd.docker("tag", loaded, "busybox:latest")
        dockerd.docker("run", "--rm", "--pull", "never", "--network", "none", "busybox", "/bin/true")
        return dockerd, None
    except (Unavailable, OSError) as error:
        return dockerd, str(error)


def commands(work: Path, bundle: Path, labctl: list[str], env: dict, socket_path: str,
             dockerd: PrivateDockerd | None) -> dict:
    """name -> (a function giving the argv of one run, its environment)."""
    counter = iter(range(10**9))
    docker_env = dict(env, DOCKER_HOST=f"unix://{socket_path}", DOCKER_CONFIG=str(work))
    true = ["busybox", "/bin/true"]
    rows = {
        "docker run --rm (labctl daemon)": (lambda: [DOCKER, "run", "--rm", "--pull", "never", "--network", "none",
                                                     *true], docker_env),
        "labctl --host run --rm": (lambda: labctl + ["--host", f"unix://{socket_path}", "run", "--rm", *true], env),
        "labctl run --rm (one-shot)": (lambda: labctl + ["run", "--rm", *true], env),
        DEBIAN_ROW: (lambda: [DOCKER, "run", "--rm", "--pull", "never", "--network", "none", *true],
                     dockerd and dockerd.env),
        "runc run": (lambda: ["runc", "--root", str(work / "runc"), "run", "-b", str(bundle), f"b{next(counter)}"],
                     env),
        "crun run": (lambda: ["unshare", "-m", "sh", "-c", f"umount /sys/fs/cgroup/unified 2>/dev/null; exec crun "
                              f"--root {work / 'crun'} run -b {bundle} c{next(counter)}"], env),
    }
    if dockerd is None:
        del rows[DEBIAN_ROW]
    return rows


def measure(rows: dict, rounds: int, warmup: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in rows}
    for round_number in range(warmup + rounds):
        order = list(rows)
        random.shuffle(order)
        for name in order:
            argv, e = rows[name]
            elapsed, _ = timed(argv(), e)
            if round_number >= warmup:
                times[name].append(elapsed)
    return times


def report(times: dict[str, list[float]], rounds: int, dockerd_reason: str | None) -> None:
    runc = statistics.median(times["runc run"])
    print(f"/bin/true in busybox, {rounds} interleaved rounds (wall time, ms)")
    print(f"{'path':34} {'median':>8} {'p10':>8} {'p90':>8} {'vs runc':>8}")
    for name, values in times.items():
        values.sort()
        med = statistics.median(values)
        print(f"{name:34} {med * 1000:8.1f} {values[len(values) // 10] * 1000:8.1f} "
              f"{values[(len(values) * 9) // 10] * 1000:8.1f} {med / runc:7.2f}x")
    if dockerd_reason:
        print(f"{DEBIAN_ROW:34} not measured: {dockerd_reason}")


def report_memory(socket_path: str, dockerd: PrivateDockerd | None) -> None:
    with open(socket_path[:-5] + ".pid") as f:
        pss, rss = pss_kib(json.load(f)["pid"])
    print(f"idle labctl daemon: PSS {pss / 1024:.1f} MiB (RSS {rss / 1024:.1f} MiB)")
    if dockerd is not None:
        total, names = dockerd.pss_kib(pss_kib)
        print(f"idle Debian dockerd ({' + '.join(names)}): PSS {total / 1024:.1f} MiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    # Ctrl-C and `kill` end the benchmark through the `finally` below (a shell's background job starts
    # with SIGINT ignored; SIGTERM would end Python without unwinding).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    host = HostSnapshot()
    work = Path(tempfile.mkdtemp(prefix="labctl-bench-daemon-"))
    env = dict(os.environ, LABCTL_STATE_DIR=str(work / "state"))
    socket_path = str(work / "labctl.sock")
    from labctl import launcher
    launcher.install(work / "labctl", python=sys.executable, repo=str(REPO))
    labctl = [str(work / "labctl")]
    dockerd: PrivateDockerd | None = None
    subprocess.run(labctl + ["daemon", "start", "--socket", socket_path], env=env, check=True, capture_output=True)
    try:
        os.environ["LABCTL_STATE_DIR"] = env["LABCTL_STATE_DIR"]
        from labctl.images.labimage import ensure_busybox_rootfs
        bundle = make_bundle(ensure_busybox_rootfs(), work)
        subprocess.run(labctl + ["prepare"], env=env, check=True, capture_output=True)
        dockerd, reason = start_dockerd(work, dict(env, DOCKER_HOST=f"unix://{socket_path}", DOCKER_CONFIG=str(work)))
        rows = commands(work, bundle, labctl, env, socket_path, None if reason else dockerd)
        report(measure(rows, args.rounds, args.warmup), args.rounds, reason)
        report_memory(socket_path, None if reason else dockerd)
    finally:
        if dockerd is not None:
            dockerd.stop()
        subprocess.run(labctl + ["daemon", "stop", "--socket", socket_path], env=env, capture_output=True)
        subprocess.run(labctl + ["cleanup", "--all"], env=env, capture_output=True)
        host.remove_created_dirs()
        left = host.changes(work, dockerd.alive() if dockerd else [])
        shutil.rmtree(work, ignore_errors=True)
        print("left on the host: " + ("; ".join(left) if left else "nothing (links, nft/iptables rules, sysctls, "
                                      "docker/containerd default dirs, mounts and processes as before)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
