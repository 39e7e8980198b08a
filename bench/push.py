"""Benchmark: `labctl push` against `skopeo copy oci:LAYOUT docker://...`, same image, same local registry.

    sudo .venv/bin/python bench/push.py [--runs 10] [--sizes 20 8 2]

A 3-layer image of random bytes (gzip layers of --sizes MiB: nothing compresses, the bytes travel) is
written as an OCI layout (ocilayout.write_layout, the lab's own layout writer) and imported into a
fresh image store from that layout, so both tools send exactly the same blobs. Each round starts a
fresh docker-registry on 127.0.0.1 (its start is not timed), and pushes into it, in alternating order
(interleaved, so machine noise hits both alike), each to a repository of its own:
  labctl      `labctl push -q localhost/bench HOST/labctl-cli/bench` through the launcher provision.sh
              installs as /usr/local/bin/labctl (python -S, labctl/launcher.py; generated here for this
              checkout): interpreter start, HEAD, POST, PUT or PATCHes, manifest
  labctl-lib  the same in-process (push.push): the protocol without the Python start-up
  skopeo      `skopeo copy oci:LAYOUT:bench docker://HOST/skopeo/bench`
A fresh registry each round (and no recorded blob locations for labctl) means nothing is skipped or
mounted: every blob is uploaded by both. Prints the median wall time of each and the ratio to skopeo
(this machine is shared and noisy: trust the medians and ratios, not single runs).
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--sizes", type=int, nargs=3, default=[20, 8, 2], metavar="MiB")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (the image store lives in a root-owned state directory)")

    work = Path(tempfile.mkdtemp(prefix="bench-push-"))
    os.environ["LABCTL_STATE_DIR"] = str(work / "bench-state")
    from labctl import launcher, state
    from labctl.images import archive, labregistry, ocilayout, push, store as imagestore

    layers = [ocilayout.Layer(ocilayout.tar_entries([ocilayout.FileEntry(f"blob{i}", data=os.urandom(mib << 20))]))
              for i, mib in enumerate(args.sizes)]
    layout = ocilayout.write_layout(work / "layout", {"bench": ocilayout.Image(layers)})
    store = imagestore.ImageStore()
    launcher.install(work / "labctl", python=sys.executable, repo=str(REPO))
    archive.import_layout(store, layout, "bench")
    locations = state.state_dir() / "blob-locations.json"
    total = sum(l.descriptor["size"] for l in layers)
    print(f"3 layers, {total / 2**20:.1f} MiB of blobs; a fresh docker-registry each round; {args.runs} rounds")
    times: dict[str, list[float]] = {"labctl": [], "labctl-lib": [], "skopeo": []}

    def run_labctl(host):
        subprocess.run([str(work / "labctl"), "push", "-q", "localhost/bench", f"{host}/labctl-cli/bench"],
                       check=True, stdout=subprocess.DEVNULL)

    def run_lib(host):
        push.push("localhost/bench", f"{host}/labctl-lib/bench", progress=False, store=store)

    def run_skopeo(host):
        subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false",
                        f"oci:{layout}:bench", f"docker://{host}/skopeo/bench"], check=True, stdout=subprocess.DEVNULL)

    runners = [("labctl", run_labctl), ("labctl-lib", run_lib), ("skopeo", run_skopeo)]
    try:
        for i in range(args.runs + 1):            # round 0 warms caches and is not counted
            with labregistry.RegistryServer(work / f"registry-{i}") as server:
                for label, fn in runners if i % 2 == 0 else list(reversed(runners)):
                    locations.unlink(missing_ok=True)
                    t = timed(lambda: fn(server.host))
                    if i:
                        times[label].append(t)
            shutil.rmtree(work / f"registry-{i}", ignore_errors=True)
        base = statistics.median(times["skopeo"])
        print(f"  {'':12} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'MiB/s':>7} {'ratio':>7}")
        for label, values in times.items():
            med = statistics.median(values)
            print(f"  {label:12} {med * 1000:10.1f} {min(values) * 1000:8.1f} {max(values) * 1000:8.1f} "
                  f"{total / 2**20 / med:7.1f} {med / base:6.2f}x")
        print("\nratio: against skopeo copy of the same OCI layout (goal: labctl <= 1.0x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
