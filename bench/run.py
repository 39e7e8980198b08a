"""Benchmark: `/bin/true` in the same busybox root filesystem with `labctl run --rm`, `runc run` and
`crun run`, side by side (interleaved, in a shuffled order each round), and the memory a detached idle
container costs beyond its own processes.

    sudo .venv/bin/python bench/run.py            # 30 rounds
    sudo .venv/bin/python bench/run.py --rounds 60

Isolation, made comparable:
  labctl  uts, ipc, mnt, pid, net (lo up), cgroup, time namespaces; a cgroup in every hierarchy
          (v1 cpu, cpuacct, memory, pids, blkio, ... + the unified tree), PID 1 born in it (clone3
          CLONE_INTO_CGROUP, then "0" into each v1 `tasks`; runc and crun write its PID into
          cgroup.procs, which waits for an RCU grace period); a writable overlay root over
          the image's unpacked layer (the busybox rootfs; "volatile", as --rm throws it away), /proc,
          /dev, /sys ro; a record in the state dir and journal records, all removed before it returns
  runc    pid, net, ipc, uts, mnt, cgroup namespaces (`runc spec` + cgroup); a cgroup in every hierarchy;
          the busybox rootfs read-only (no overlay); /proc, /dev, /sys ro, masked paths, capabilities,
          no seccomp profile (runc spec has none)
  crun    the same bundle; run under `unshare -m sh -c 'umount /sys/fs/cgroup/unified; crun run ...'`
          because crun refuses this hybrid cgroup host otherwise (the wrapper is included in its time)
Wall time is measured around each whole command (process start to exit), as a user sees it.
"(its start-up + imports)" is the part of labctl's time spent before it does anything: the venv's
Python started with -S, as the launcher starts it, importing the modules `labctl run` imports.

labctl is run two ways: through the launcher vagrant/provision.sh installs as /usr/local/bin/labctl
(python -S with the venv's sys.path baked in, see labctl/launcher.py; generated here into the temporary
directory), and through pip's console script .venv/bin/labctl (a normal interpreter start, `site` and
all). The package is byte-compiled first, as provision.sh does, so that an environment with
PYTHONDONTWRITEBYTECODE does not recompile every module on every start.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


#: What `labctl run --rm busybox /bin/true` imports (python -X importtime shows the same set), on the
#: path the launcher sets: the repository first, then the standard library.
#: What `labctl run --rm IMAGE CMD` imports (read off `python -X importtime -m labctl run ...`).
RUN_IMPORTS = (f"import sys; sys.path.insert(0, {str(REPO)!r}); import labctl.client.main, labctl.client.containers, "
               "labctl.containers.lifecycle, labctl.containers.networking, labctl.containers.volumes, "
               "labctl.containers.images, labctl.containers.teardown, labctl.containers.supervisor, "
               "labctl.runtime.create, labctl.runtime.user, labctl.runtime.stdio, labctl.kernel.rootfs, "
               "labctl.kernel.overlay, labctl.kernel.signals, labctl.images.store, labctl.network.etcfiles, threading")


def make_bundle(rootfs: Path, where: Path) -> Path:
    bundle = where / "bundle"
    bundle.mkdir()
    subprocess.run(["runc", "spec", "-b", str(bundle)], check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["root"] = {"path": str(rootfs), "readonly": True}
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/true"]
    config["linux"]["namespaces"].append({"type": "cgroup"})
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def timed(argv: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds user+system of the whole process tree, reaped children included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({result.returncode}): {result.stderr.decode()[-500:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def pss_kib(pid: int) -> tuple[int, int]:
    """(PSS, RSS) in KiB from /proc/<pid>/smaps_rollup."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if parts[0] in ("Pss:", "Rss:"):
            values[parts[0]] = int(parts[1])
    return values["Pss:"], values["Rss:"]


def measure_memory(labctl: list[str], env: dict, count: int = 5) -> dict:
    """Start `count` detached idle containers; the supervisors' PSS and RSS, against the containers' own."""
    from labctl.containers import store
    os.environ["LABCTL_STATE_DIR"] = env["LABCTL_STATE_DIR"]
    ids = []
    try:
        for _ in range(count):
            out = subprocess.run(labctl + ["run", "-d", "busybox", "sleep", "3600"], env=env, check=True,
                                 capture_output=True, text=True).stdout.strip()
            ids.append(out)
        time.sleep(0.5)
        sup, own = [], []
        for cid in ids:
            c = store.load(cid)
            sup.append(pss_kib(c.state["supervisor_pid"]))
            own.append(pss_kib(c.pid))
        return {"containers": count,
                "supervisor_pss_kib": statistics.median(p for p, _ in sup),
                "supervisor_rss_kib": statistics.median(r for _, r in sup),
                "container_pss_kib": statistics.median(p for p, _ in own),
                "container_rss_kib": statistics.median(r for _, r in own)}
    finally:
        if ids:
            subprocess.run(labctl + ["rm", "-f", *ids], env=env, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    work = Path(tempfile.mkdtemp(prefix="labctl-bench-"))
    env = dict(os.environ, LABCTL_STATE_DIR=str(work / "state"))
    console_script = [str(Path(sys.executable).parent / "labctl")]
    if not Path(console_script[0]).exists():
        console_script = [sys.executable, "-m", "labctl"]
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "labctl")], check=True,
                   stdout=subprocess.DEVNULL)
    from labctl import launcher
    launcher.install(work / "labctl", python=sys.executable, repo=str(REPO))
    labctl = [str(work / "labctl")]
    try:
        from labctl.images.labimage import ensure_busybox_rootfs
        os.environ["LABCTL_STATE_DIR"] = env["LABCTL_STATE_DIR"]
        rootfs = ensure_busybox_rootfs()
        bundle = make_bundle(rootfs, work)
        subprocess.run(labctl + ["prepare"], env=env, check=True, capture_output=True)
        counter = iter(range(10**9))
        commands = {
            "labctl run --rm": lambda: labctl + ["run", "--rm", "busybox", "/bin/true"],
            "  (via .venv/bin/labctl)": lambda: console_script + ["run", "--rm", "busybox", "/bin/true"],
            "runc run": lambda: ["runc", "--root", str(work / "runc"), "run", "-b", str(bundle), f"b{next(counter)}"],
            "crun run": lambda: ["unshare", "-m", "sh", "-c",
                                 f"umount /sys/fs/cgroup/unified 2>/dev/null; exec crun --root {work / 'crun'} "
                                 f"run -b {bundle} c{next(counter)}"],
            "  (its start-up + imports)": lambda: [sys.executable, "-S", "-c", RUN_IMPORTS],
            "python3 -c pass (venv)": lambda: [sys.executable, "-c", "pass"],
            "python3 -S -c pass (venv)": lambda: [sys.executable, "-S", "-c", "pass"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        for round_number in range(args.warmup + args.rounds):
            order = list(commands)
            random.shuffle(order)
            for name in order:
                elapsed, used = timed(commands[name](), env)
                if round_number >= args.warmup:
                    times[name].append(elapsed)
                    cpu[name].append(used)
        runc = statistics.median(times["runc run"])
        runc_cpu = statistics.median(cpu["runc run"])
        print(f"/bin/true in the busybox rootfs, {args.rounds} interleaved rounds "
              f"(wall time: median, p10, p90; CPU time user+sys of the process tree: median), ms")
        print(f"{'runtime':26} {'median':>8} {'p10':>8} {'p90':>8} {'vs runc':>8} {'CPU':>8} {'vs runc':>8}")
        for name, values in times.items():
            values.sort()
            med = statistics.median(values)
            p10, p90 = values[len(values) // 10], values[(len(values) * 9) // 10]
            c = statistics.median(cpu[name])
            print(f"{name:26} {med * 1000:8.1f} {p10 * 1000:8.1f} {p90 * 1000:8.1f} {med / runc:8.2f}x "
                  f"{c * 1000:8.1f} {c / runc_cpu:8.2f}x")
        mem = measure_memory(labctl, env)
        print(f"\nidle detached container ({mem['containers']} of them, medians): supervisor PSS "
              f"{mem['supervisor_pss_kib'] / 1024:.1f} MiB (RSS {mem['supervisor_rss_kib'] / 1024:.1f} MiB); "
              f"the container's own `sleep`: PSS {mem['container_pss_kib'] / 1024:.2f} MiB")
    finally:
        subprocess.run(labctl + ["cleanup"], env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
