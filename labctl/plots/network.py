"""Figures for step 6: latency and throughput over the bridge vs loopback; packets counted on each veth.

Each function takes the dict labctl.demos.network.measure_paths() returns and gives a matplotlib Figure.
"""
from __future__ import annotations

import statistics


def _pyplot():
    import matplotlib
    if "ipykernel" not in __import__("sys").modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


PATHS = (("loopback", "host loopback (lo)", "tab:blue"), ("bridge", "container → bridge → container", "tab:orange"))


def rtt(results: dict):
    """Distribution of TCP round-trip times on each path, medians drawn as lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    everything = sorted(t for key, _, _ in PATHS for t in results[key]["rtt_us"])
    top = everything[int(len(everything) * 0.99) - 1] * 1.2  # the slowest 1% would squash the picture
    bins = [i * top / 60 for i in range(61)]
    for key, label, color in PATHS:
        times = results[key]["rtt_us"]
        median = statistics.median(times)
        ax.hist([min(t, top) for t in times], bins=bins, alpha=0.55, color=color, label=f"{label}: median {median:.0f} µs")
        ax.axvline(median, color=color, linestyle="--", linewidth=1.5)
    ax.set_title(f"TCP round-trip time, {results['count']} ping-pongs of 64 bytes")
    ax.set_xlabel("round-trip time (µs; the slowest 1% piled up at the right edge)")
    ax.set_ylabel("round trips")
    ax.legend()
    fig.tight_layout()
    return fig


def throughput(results: dict):
    """Bulk TCP throughput on each path, in MiB/s; the loopback figure drawn as the reference line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    values = [results[key]["bytes_per_second"] / (1 << 20) for key, _, _ in PATHS]
    ax.bar([label for _, label, _ in PATHS], values, color=[c for _, _, c in PATHS])
    ax.axhline(values[0], color="tab:blue", linestyle="--", linewidth=1, label="loopback (reference)")
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.0f}", ha="center", va="bottom")
    ax.set_title(f"TCP throughput, {results['total_bytes'] >> 20} MiB sent by one Python client")
    ax.set_ylabel("throughput (MiB/s)")
    ax.legend()
    fig.tight_layout()
    return fig


def veth_counters(results: dict):
    """Packets and bytes each container's veth (host end) counted during the measurement.
    The host end of the server's veth transmits what the client sent: the line marks those bytes."""
    plt = _pyplot()
    counters = results["veth_counters"]
    names = list(counters)
    fig, (ax_p, ax_b) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.38
    for ax, unit, scale in ((ax_p, "packets", 1), (ax_b, "bytes", 1 << 20)):
        rx = [counters[n][f"rx_{unit}"] / scale for n in names]
        tx = [counters[n][f"tx_{unit}"] / scale for n in names]
        xs = range(len(names))
        ax.bar([x - width / 2 for x in xs], rx, width, label="rx (from the container)")
        ax.bar([x + width / 2 for x in xs], tx, width, label="tx (to the container)")
        ax.set_xticks(list(xs), names, fontsize=8)
    ax_b.set_yscale("log")
    ax_b.axhline(results["total_bytes"] / (1 << 20), color="black", linestyle="--", linewidth=1,
                 label="payload the client sent")
    ax_p.set_title("packets counted on each veth")
    ax_p.set_ylabel("packets (large segments: GSO/GRO)")
    ax_b.set_title("bytes counted on each veth")
    ax_b.set_ylabel("MiB (log scale)")
    ax_p.legend(fontsize=8)
    ax_b.legend(fontsize=8)
    fig.suptitle("IFLA_STATS64 of the host ends of the veth pairs during the measurement")
    fig.tight_layout()
    return fig
