"""Figures for step 5: the timeline of one pull (every request and blob on a time axis, bytes over time).

A digest is written one way everywhere, the way `docker images --digests` shortens it: `sha256:` and the
first 12 hex digits (short_digest). Sizes are in binary units (KiB = 1024 bytes, MiB = 2^20 bytes).
"""
from __future__ import annotations

import os
import re
import sys

#: (colour, what a bar of that colour is): the top panel's legend.
KINDS = {"challenge": ("tab:red", "401: the auth challenge"), "token": ("tab:purple", "token request"),
         "ok": ("tab:blue", "request answered 2xx"), "other": ("tab:orange", "other status (3xx, 404...)"),
         "blob": ("tab:green", "blob: asked for → sha256 verified")}
DIGEST = re.compile(r"sha256:([0-9a-f]{64})")


def short_digest(digest: str) -> str:
    """sha256:0123456789ab…: the algorithm and the first 12 hex digits."""
    return DIGEST.sub(lambda m: f"sha256:{m.group(1)[:12]}", digest)


def _unit(total: int) -> tuple[float, str]:
    return (2**20, "MiB") if total >= 2**20 else (2**10, "KiB")


def _rows(events: list) -> list[dict]:
    return [e if isinstance(e, dict) else {"t": e.t, "kind": e.kind, "text": e.text, **e.data} for e in events]


def _bars(rows: list[dict]) -> list[tuple[str, float, float, str]]:
    """(label, start s, end s, kind) for every HTTP response and every verified blob, in order."""
    bars = []
    starts, sizes = {}, {}
    for e in rows:
        if e["kind"] == "response":
            url = e["url"].split("/v2/", 1)[-1] if "/v2/" in e["url"] else e["url"].split("//", 1)[-1]
            url = short_digest(url.split("?", 1)[0] if "token" in url else url)
            kind = "challenge" if e["status"] == 401 else "token" if "token" in e["url"] else \
                "ok" if e["status"] < 300 else "other"
            bars.append((f"{e['method']} {url or '/v2/'} → {e['status']}", e["started"], e["t"], kind))
        elif e["kind"] == "blob-start":
            starts[e["digest"]], sizes[e["digest"]] = e["t"], e["size"]
        elif e["kind"] == "blob-done":
            bars.append((f"{e['what']} {short_digest(e['digest'])} ({_size(e['size'])}) verified",
                         starts.get(e["digest"], e["t"]), e["t"], "blob"))
    return bars


def _size(n: int) -> str:
    scale, unit = _unit(n)
    return f"{n / scale:.2f} {unit}"


def _draw_bytes(ax, rows: list[dict]) -> None:
    """Each blob's bytes received over time, as a share of its size (one line per blob, so blobs of
    1 KiB and 1 MiB both show; lines rising together are parallel downloads), and the whole image's."""
    sizes = {e["digest"]: (e["size"], e["what"]) for e in rows if e["kind"] == "blob-start"}
    total = sum(s for s, _ in sizes.values())
    per_blob: dict[str, list[tuple[float, float]]] = {}
    times, shares, got = [0.0], [0.0], {}
    for e in rows:
        if e["kind"] == "blob-start":
            per_blob.setdefault(e["digest"], []).append((e["t"] * 1000, 0.0))
        elif e["kind"] == "blob-bytes" and e["digest"] in sizes:
            per_blob[e["digest"]].append((e["t"] * 1000, 100 * e["bytes"] / max(sizes[e["digest"]][0], 1)))
            got[e["digest"]] = e["bytes"]
            times.append(e["t"] * 1000)
            shares.append(100 * sum(got.values()) / max(total, 1))
    for digest, points in per_blob.items():
        size, what = sizes[digest]
        ax.step([t for t, _ in points], [p for _, p in points], where="post", linewidth=1.5,
                label=f"{what} {short_digest(digest)} ({_size(size)})")
    ax.step(times, shares, where="post", color="black", linewidth=2.5, linestyle=(0, (5, 2)),
            label=f"the whole image ({_size(total)}, {total} bytes)")
    ax.set_xlabel("time since the pull began (ms)")
    ax.set_ylabel("received (% of its size)")
    ax.set_ylim(0, 105)
    ax.legend(loc="upper left", fontsize=8)


def pull_timeline(events: list, path: str | os.PathLike | None = None, title: str = "One image pull, request by request"):
    """Two panels sharing the time axis: above, one bar per HTTP request (sent to response headers) and
    one per blob download (first byte asked to digest verified), coloured by kind (the legend says
    which); below, the bytes of each blob received over time (layers fetched in parallel rise
    together) and the whole image's, each as a share of its size (the legend gives the sizes in
    KiB/MiB). `events` is PullLog.events (or its to_json()).
    Saves to `path` if given (100 dpi); returns the figure."""
    import matplotlib
    if "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = _rows(events)
    bars = _bars(rows)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 3.5 + 0.3 * len(bars)), sharex=True,
                                      gridspec_kw={"height_ratios": [max(len(bars), 1), 6]})
    for i, (label, start, end, kind) in enumerate(bars):
        top.barh(i, max((end - start) * 1000, 0.05), left=start * 1000, color=KINDS[kind][0], height=0.6)
    top.set_yticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    top.invert_yaxis()
    top.set_title(title)
    top.set_ylabel("request / blob")
    used = [k for k in KINDS if any(b[3] == k for b in bars)]
    top.legend(handles=[Patch(color=KINDS[k][0], label=KINDS[k][1]) for k in used], loc="lower left",
               fontsize=8)
    _draw_bytes(bottom, rows)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=100)
    return fig
