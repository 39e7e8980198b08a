"""Figures for step 5: the timeline of one pull (every request and blob on a time axis, bytes over time)."""
from __future__ import annotations

import os
import sys


def pull_timeline(events: list, path: str | os.PathLike | None = None, title: str = "One image pull, request by request"):
    """Two panels sharing the time axis: above, one bar per HTTP request (start to response headers)
    and one per blob download (first byte asked to digest verified); below, blob bytes received over
    time, with the image's total size drawn as the limit. `events` is PullLog.events (or its to_json()).
    Saves to `path` if given; returns the figure."""
    import matplotlib
    if "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [e if isinstance(e, dict) else {"t": e.t, "kind": e.kind, "text": e.text, **e.data} for e in events]
    bars = []  # (label, start, end, colour)
    for e in rows:
        if e["kind"] == "response":
            url = e["url"].split("/v2/", 1)[-1] if "/v2/" in e["url"] else e["url"].split("//", 1)[-1]
            url = url.split("?", 1)[0] if "token" in url else url
            short = url if len(url) < 38 else url[:20] + "…" + url[-14:]
            colour = "tab:red" if e["status"] == 401 else "tab:purple" if "token" in e["url"] else \
                "tab:blue" if e["status"] < 300 else "tab:orange"
            bars.append((f"{e['method']} {short or '/v2/'} → {e['status']}", e["started"], e["t"], colour))
    starts = {}
    for e in rows:
        if e["kind"] == "blob-start":
            starts[e["digest"]] = e["t"]
        elif e["kind"] == "blob-done":
            bars.append((f"{e['what']} {e['digest'][7:19]} ({e['size']} B) verified", starts.get(e["digest"], e["t"]),
                         e["t"], "tab:green"))

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 2 + 0.32 * len(bars)), sharex=True,
                                      gridspec_kw={"height_ratios": [max(len(bars), 1), 4]})
    for i, (label, start, end, colour) in enumerate(bars):
        top.barh(i, max((end - start) * 1000, 0.05), left=start * 1000, color=colour, height=0.6)
    top.set_yticks(range(len(bars)))
    top.set_yticklabels([b[0] for b in bars], fontsize=7)
    top.invert_yaxis()
    top.set_title(title)
    top.set_ylabel("request / blob")

    per_blob: dict[str, int] = {}
    times, totals = [0.0], [0]
    sizes = {}
    for e in rows:
        if e["kind"] == "blob-bytes":
            per_blob[e["digest"]] = e["bytes"]
            times.append(e["t"] * 1000)
            totals.append(sum(per_blob.values()))
        elif e["kind"] == "blob-start":
            sizes[e["digest"]] = e["size"]
    bottom.step(times, totals, where="post", color="tab:green", label="bytes received (all blobs)")
    total = sum(sizes.values())
    if total:
        bottom.axhline(total, color="black", linestyle="--", linewidth=1, label=f"image size: {total} bytes")
    bottom.set_xlabel("time since the pull began (ms)")
    bottom.set_ylabel("bytes received")
    bottom.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110)
    return fig
