"""Benchmark: `labctl pull` + unpack against `skopeo copy` + `umoci unpack`, same images, same local registry.

    sudo .venv/bin/python bench/pull.py [--runs 15]

One docker-registry on 127.0.0.1 serves the lab's images (pushed by skopeo). Each round runs, in
alternating order (interleaved, so machine noise hits both alike), from an empty destination:
  labctl      `python -m labctl pull HOST/lab/NAME` (CLI: interpreter start, pull, verify, unpack the
              layers into the image store) with a fresh LABCTL_STATE_DIR
  labctl-lib  the same in-process (registry.pull + ImageStore.ensure_layers): the protocol and the
              unpacking without the Python start-up
  skopeo+umoci `skopeo copy docker://HOST/lab/NAME oci:DIR:NAME` then `umoci unpack --image DIR:NAME BUNDLE`
Prints the median wall time of each and the ratios to skopeo+umoci (the phases: labctl's pull against
skopeo copy, labctl's unpacking against umoci unpack) (this machine is shared and noisy:
trust the medians and ratios, not single runs).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--images", nargs="+", default=["busybox", "layered"])
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (umoci unpack and the lab's unpacking keep file owners)")

    work = Path(tempfile.mkdtemp(prefix="bench-pull-"))
    os.environ["LABCTL_STATE_DIR"] = str(work / "bench-state")
    from labctl.images import store as imagestore, labregistry, distribution as registry

    server = labregistry.RegistryServer(work / "registry").start()
    try:
        labregistry.seed(server.host, labregistry.write_lab_layout(work / "layout"), args.images)
        print(f"docker-registry on {server.host}; images {', '.join(args.images)}; {args.runs} interleaved rounds")
        for name in args.images:
            image = f"{server.host}/lab/{name}"
            times: dict[str, list[float]] = {"labctl": [], "labctl-lib": [], "skopeo+umoci": [],
                                             "  labctl pull only": [], "  skopeo copy only": [],
                                             "  labctl unpack only": [], "  umoci unpack only": []}

            def run_labctl(i):
                env = dict(os.environ, LABCTL_STATE_DIR=str(work / f"cli-{name}-{i}"))
                subprocess.run([sys.executable, "-m", "labctl", "pull", image], env=env, check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            def run_lib(i):
                store = imagestore.ImageStore(work / f"lib-{name}-{i}")
                start = time.perf_counter()
                result = registry.pull(image, store=store, progress=False)
                middle = time.perf_counter()
                store.ensure_layers(result.digest)
                phases["  labctl pull only"] = middle - start
                phases["  labctl unpack only"] = time.perf_counter() - middle

            def run_skopeo(i):
                layout = work / f"oci-{name}-{i}"
                start = time.perf_counter()
                subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", "--src-tls-verify=false",
                                f"docker://{image}", f"oci:{layout}:{name}"], check=True, stdout=subprocess.DEVNULL)
                middle = time.perf_counter()
                subprocess.run(["umoci", "--log", "error", "unpack", "--image", f"{layout}:{name}",
                                str(work / f"bundle-{name}-{i}")], check=True, stdout=subprocess.DEVNULL)
                phases["  skopeo copy only"] = middle - start
                phases["  umoci unpack only"] = time.perf_counter() - middle

            phases: dict[str, float] = {}
            runners = [("labctl", run_labctl), ("labctl-lib", run_lib), ("skopeo+umoci", run_skopeo)]
            for i in range(args.runs + 1):            # round 0 warms caches and is not counted
                order = runners if i % 2 == 0 else list(reversed(runners))
                for label, fn in order:
                    phases.clear()
                    t = timed(lambda: fn(i))
                    if i:
                        times[label].append(t)
                        for phase, value in phases.items():
                            times[phase].append(value)
                for leftover in work.glob(f"*-{name}-{i}"):
                    shutil.rmtree(leftover, ignore_errors=True)
            base = statistics.median(times["skopeo+umoci"])
            bases = {"  labctl pull only": statistics.median(times["  skopeo copy only"]),
                     "  labctl unpack only": statistics.median(times["  umoci unpack only"])}
            print(f"\nlab/{name}")
            print(f"  {'':22} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'ratio':>7}")
            for label, values in times.items():
                med = statistics.median(values)
                compared = label in ("labctl", "labctl-lib", "skopeo+umoci") or label in bases
                ratio = f"{med / bases.get(label, base):6.2f}x" if compared else ""
                print(f"  {label:22} {med * 1000:10.1f} {min(values) * 1000:8.1f} {max(values) * 1000:8.1f} {ratio:>7}")
        print("\nratio: against skopeo+umoci; the pull-only and unpack-only phases against skopeo copy and "
              "umoci unpack")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
