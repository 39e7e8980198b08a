"""Step 9 figures: which defence stops which attack (measured by labctl.demos.attacks), and what the
seccomp filter costs per system call (labctl.demos.seccompcost)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labctl.demos.attacks import Outcome
    from labctl.demos.seccompcost import Cost

#: Cell styles: colour for the eye, hatching and text for grayscale prints and colour-blind readers.
STYLE = {True: ("#d9534f", "xx", "WORKS"), False: ("#5cb85c", "", None), None: ("#dddddd", "..", "absent")}


def _pyplot():
    import matplotlib
    if "inline" not in matplotlib.get_backend().lower() and "nbagg" not in matplotlib.get_backend().lower():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def attack_matrix(columns: dict[str, dict[str, "Outcome"]], attacks: list[str] | None = None):
    """One row per attack, one column per profile (--privileged, then each defence added to the ones
    before); each cell says what the kernel answered: WORKS, or the call and errno that stopped it."""
    from matplotlib.patches import Patch, Rectangle
    plt = _pyplot()
    attacks = attacks or [a for a in next(iter(columns.values()))]
    names = list(columns)
    fig, ax = plt.subplots(figsize=(1.45 * len(names) + 2.2, 0.55 * len(attacks) + 1.8))
    for x, column in enumerate(names):
        for y, attack in enumerate(attacks):
            outcome = columns[column].get(attack)
            ok = outcome.ok if outcome else None
            colour, hatch, label = STYLE[ok]
            ax.add_patch(Rectangle((x, y), 1, 1, facecolor=colour, hatch=hatch, edgecolor="white", linewidth=2))
            text = label or f"{outcome.call}\n{outcome.errno}"
            ax.text(x + 0.5, y + 0.5, text, ha="center", va="center", fontsize=7.5,
                    fontweight="bold" if ok else "normal")
    ax.set_xlim(0, len(names))
    ax.set_ylim(len(attacks), 0)
    ax.set_xticks([i + 0.5 for i in range(len(names))], names, rotation=25, ha="right", fontsize=9)
    ax.set_yticks([i + 0.5 for i in range(len(attacks))], attacks, fontsize=9)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title("Defences added one at a time: which stops which attack\n"
                 "(measured: the call that failed and its errno)")
    ax.legend(handles=[Patch(facecolor=STYLE[True][0], hatch="xx", label="the attack works"),
                       Patch(facecolor=STYLE[False][0], label="stopped by the kernel"),
                       Patch(facecolor=STYLE[None][0], hatch="..", label="not in this kernel")],
              loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def seccomp_cost(costs: list["Cost"]):
    """Nanoseconds per system call of `dd bs=1` (a read and a write per byte), each runtime with and
    without its seccomp filter; the bar's label gives the median and the ratio to the same runtime
    without a filter."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    base = {c.runtime: c.ns_per_call for c in costs if not c.filtered}
    labels = [f"{c.runtime}\n{'seccomp filter' if c.filtered else 'no filter'}" for c in costs]
    bars = ax.bar(labels, [c.ns_per_call for c in costs],
                  color=["#4a7ebb" if c.filtered else "#a6c4e6" for c in costs],
                  hatch=None, edgecolor="black", linewidth=0.6)
    for bar, cost in zip(bars, costs):
        ratio = cost.ns_per_call / base[cost.runtime] if base.get(cost.runtime) else None
        text = f"{cost.ns_per_call:.0f} ns" + (f"\n×{ratio:.2f}" if cost.filtered and ratio else "")
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                    fontsize=8, xytext=(0, 2), textcoords="offset points")
        for spread in (cost.low, cost.high):
            ax.plot([bar.get_x() + 0.25 * bar.get_width(), bar.get_x() + 0.75 * bar.get_width()], [spread] * 2,
                    color="black", linewidth=0.8)
    ax.set_ylabel("ns per system call (median; ticks: min and max)")
    ax.set_ylim(0, max(c.high for c in costs) * 1.3)
    ax.set_title(f"What the seccomp filter costs: dd bs=1 count={costs[0].calls // 2:,}, "
                 f"{costs[0].runs} runs each")
    fig.tight_layout()
    return fig
