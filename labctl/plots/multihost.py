"""Step 13 figures: what the overlay costs. Round-trip times and TCP throughput over three paths, measured
live by labctl.demos.clusterdemo.measure: loopback (one namespace), a bridge (two namespaces on the
underlay bridge) and the overlay (containers on two hosts: veth, bridge, VXLAN, underlay, and back)."""
from __future__ import annotations

from labctl.plots.oci import _pyplot


def rtt_and_throughput(measured: dict[str, dict]):
    """Two panels: each path's ICMP round-trip times (one dot per echo, the median as a bar) and its TCP
    throughput in MiB/s. `measured` is {path: {"rtt": [ms, ...], "mibs": float}}."""
    import statistics
    plt = _pyplot()
    labels = list(measured)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    medians = [statistics.median(measured[p]["rtt"]) * 1000 if measured[p]["rtt"] else 0 for p in labels]
    left.bar(labels, medians, color="white", edgecolor="black", hatch="//", label="median")
    for i, path in enumerate(labels):
        rtts = [r * 1000 for r in measured[path]["rtt"]]
        left.plot([i] * len(rtts), rtts, "o", markersize=3, alpha=0.6, color="black")
    left.bar_label(left.containers[0], labels=[f"{m:.0f}" for m in medians], padding=3, fontsize=8)
    left.set_ylabel("ICMP round trip (µs)")
    left.set_title("Round-trip time, 56-byte echo")
    left.margins(y=0.15)
    rates = [measured[p]["mibs"] for p in labels]
    bars = right.bar(labels, rates, color="white", edgecolor="black", hatch="..")
    right.bar_label(bars, labels=[f"{r:.0f}" for r in rates], padding=3, fontsize=8)
    right.set_ylabel("TCP throughput (MiB/s)")
    right.set_title("One TCP connection")
    right.margins(y=0.15)
    fig.suptitle("The same kernel, three paths: loopback, a bridge, a VXLAN overlay")
    fig.tight_layout()
    return fig


def lease_timeline(result: dict, ttl: int):
    """When a SIGKILLed host's keys left etcd (its host key, its container's endpoint key) and that
    container's MAC left the other host's FDB, seconds after the kill, against the lease's TTL (the
    time the store waits for a refresh that never comes)."""
    plt = _pyplot()
    rows = sorted(result["gone"].items(), key=lambda item: item[1])
    fig, ax = plt.subplots(figsize=(8, 1.4 + 0.4 * len(rows)))
    ax.axvspan(0, ttl, color="0.9", label=f"TTL {ttl} s")
    ax.axvline(0, color="black")
    ax.annotate("SIGKILL", (0, len(rows) - 0.95), fontsize=8)
    if result.get("ttl_left") is not None:   # etcd's TTL of the lease at the kill: its last refresh was earlier
        ax.axvline(result["ttl_left"], color="black", linestyle=":",
                   label=f"{result['ttl_left']} s left at the kill (etcd: whole s)")
    for row, (name, seconds) in enumerate(rows):
        ax.plot([seconds], [row], "s", color="black")
        ax.annotate(f"{name} gone: {seconds:.1f} s", (seconds, row), xytext=(6, -3), textcoords="offset points",
                    fontsize=8)
    ax.set_ylim(-0.6, len(rows) - 0.6)
    ax.set_yticks([])
    ax.set_xlim(-0.5, ttl * 1.6)
    ax.set_xlabel("seconds after the daemon was killed")
    ax.set_title("A dead host's endpoints leave etcd, and the other hosts, when its lease expires")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig
