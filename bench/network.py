"""Benchmark for step 6: what a container's network costs, measured side by side (run as root).

    .venv/bin/python bench/network.py [--rounds 5]

Prints medians over the rounds: TCP round-trip time and throughput over the host's loopback vs
between two containers over the bridge (labctl.demos.nettool, a Python client), and the time to attach and
detach a container's network in each mode (bridge: veth + address + route; none: lo up).
"""
from __future__ import annotations

import argparse
import statistics
import time

from labctl.kernel import namespaces
from labctl import network
from labctl.demos.network import measure_paths


def attach_times(mode: str, rounds: int, net: network.Network) -> list[float]:
    times = []
    for i in range(rounds):
        proc = namespaces.spawn(["sleep", "30"], namespaces=("net",), start=False, what="bench")
        try:
            start = time.perf_counter()
            att = network.attach(proc.pid, f"bench{i}", mode, network=net)
            att.detach()
            times.append(time.perf_counter() - start)
        finally:
            proc.kill()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    net = network.Network("labbench0", "10.203.77.0/24")
    rtt = {"loopback": [], "bridge": []}
    rate = {"loopback": [], "bridge": []}
    for _ in range(args.rounds):
        results = measure_paths(count=1000, total_bytes=64 << 20, network=net)
        for key in rtt:
            rtt[key].append(statistics.median(results[key]["rtt_us"]))
            rate[key].append(results[key]["bytes_per_second"] / (1 << 20))
    for key in rtt:
        print(f"{key:8}  median RTT {statistics.median(rtt[key]):6.1f} µs   "
              f"throughput {statistics.median(rate[key]):6.0f} MiB/s")
    print(f"bridge/loopback: RTT x{statistics.median(rtt['bridge']) / statistics.median(rtt['loopback']):.2f}, "
          f"throughput x{statistics.median(rate['bridge']) / statistics.median(rate['loopback']):.2f}")
    # Keep the bridge up between rounds (one container stays), so the attach times do not include it.
    keeper = namespaces.spawn(["sleep", "300"], namespaces=("net",), start=False, what="bench keeper")
    keep = network.attach(keeper.pid, "keeper", "bridge", network=net)
    try:
        for mode in ("bridge", "none"):
            t = attach_times(mode, max(10, args.rounds * 4), net)
            print(f"attach+detach, mode {mode:6}: median {statistics.median(t) * 1000:6.1f} ms")
    finally:
        keep.detach()
        keeper.kill()


if __name__ == "__main__":
    main()
