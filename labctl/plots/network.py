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


def _ns_band(ax, x0: float, x1: float, label: str, hatch: str) -> None:
    from matplotlib.patches import FancyBboxPatch
    ax.add_patch(FancyBboxPatch((x0, 0.28), x1 - x0, 0.6, boxstyle="round,pad=0.01", facecolor="#f4f4f4",
                                edgecolor="#555555", hatch=hatch, linewidth=1, zorder=0))
    ax.text((x0 + x1) / 2, 0.85, label, ha="center", va="center", fontsize=9, fontweight="bold",
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})


def packet_path(path: dict):
    """The path of one TCP connection from a container to the lab's upstream namespace, box by box
    (eth0, its veth, the bridge lab0, the host's routing and the nft masquerade rule, the upstream
    link, the upstream's eth0), with the packet's addresses before and after the rewrite, the rule's
    counter, and the conntrack entry that rewrites the replies back. `path` is what
    labctl.demos.natpath.nat_exchange() measured."""
    plt = _pyplot()
    c, up, ct = path["container"], path["upstream"], path["conntrack"]
    sport = ct["original"][1] if ct else path["seen_from"][1]
    counted = path["counted"]
    boxes = [(f"eth0\n{c['address']}", "container"),
             (f"{path['veth']}\n(veth, host end)", "veth"),
             (f"{path['bridge']}\nbridge, gateway\n{path['gateway']}", "bridge"),
             (f"nft table {path['table']}\npostrouting: masquerade\ncounter: "
              + (f"{counted[0]} packet(s), {counted[1]} B" if counted else "(no counter)"), "rule"),
             (f"{up['host_link']}\n{up['host_address']}", "uplink"),
             (f"eth0\n{up['address']}:{path['port']}", "upstream")]
    fig, ax = plt.subplots(figsize=(14, 5.6))
    xs = [0.07, 0.24, 0.39, 0.56, 0.74, 0.91]
    _ns_band(ax, 0.0, 0.15, f"container (PID {c['pid']})\nnet namespace", "..")
    _ns_band(ax, 0.165, 0.815, "the host's network namespace", "")
    _ns_band(ax, 0.83, 0.995, f"{up['netns']}\n(stand-in upstream)", "..")
    drawn = [ax.text(x, 0.55, text, ha="center", va="center", fontsize=9,
                     bbox={"boxstyle": "round,pad=0.4", "facecolor": "#ffe3b3" if kind == "rule" else "white",
                           "edgecolor": "#c44e52" if kind == "rule" else "#333333",
                           "linewidth": 2 if kind == "rule" else 1})
             for x, (text, kind) in zip(xs, boxes)]
    for a, b in zip(drawn, drawn[1:]):   # from the right edge of one box to the left edge of the next
        ax.annotate("", xy=(-0.12, 0.5), xycoords=b, xytext=(1.12, 0.5), textcoords=a,
                    arrowprops={"arrowstyle": "-|>", "color": "#4c72b0", "linewidth": 1.5})
    before = f"src {c['address']}:{sport}\ndst {up['address']}:{path['port']}"
    after = f"src {up['host_address']}:{sport}  ← rewritten\ndst {up['address']}:{path['port']}"
    ax.text(0.31, 0.2, f"the packet as sent:\n{before}", ha="center", va="center", fontsize=9, family="monospace")
    ax.text(0.80, 0.2, f"after the masquerade:\n{after}", ha="center", va="center", fontsize=9,
            family="monospace", fontweight="bold")
    rx, tx = path.get("veth_packets", (0, 0))
    entry = (f"conntrack: original {ct['original'][0]}:{ct['original'][1]} → {ct['original'][2]}:{ct['original'][3]}"
             f"   reply {ct['reply'][0]}:{ct['reply'][1]} → {ct['reply'][2]}:{ct['reply'][3]}   [{ct['status']}]"
             if ct else "conntrack: no entry found for this connection")
    ax.text(0.5, 0.05, f"{entry}\nthe replies come back to {up['host_address']} and conntrack rewrites them to "
            f"{c['address']}; the veth counted {rx} packets from the container and {tx} to it, the rule counted "
            f"{counted[0] if counted else '?'}: a nat chain sees only a connection's first packet",
            ha="center", va="center", fontsize=8.5, bbox={"facecolor": "#eef3f8", "edgecolor": "#4c72b0"})
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.05, 0.95)
    ax.axis("off")
    ax.set_title(f"A container's connection to {up['address']}:{path['port']}, through {path['bridge']} "
                 "and source NAT (read after a real exchange)")
    fig.tight_layout()
    return fig
