"""Learning curves of a simulation campaign as a PNG: hit rate (with calibrated chance) and time to hit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {"vectorized": "tab:blue", "scalar": "tab:orange", "none": "tab:gray", "blocked": "tab:red"}
# none and blocked can coincide exactly (a fully blocked signal is no learning): keep both visible.
STYLES = {"none": ("--", "s"), "blocked": (":", "x")}


def plot_curves(summary: dict[str, Any], path: str | Path) -> None:
    """Two panels, one line per rule (mean +- SEM over mice): hit rate per day; median time to hit per day."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no Qt
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for rule, curve in summary["curves"].items():
        days = [d["day"] for d in curve["days"]]
        color = COLORS.get(rule)
        ls, marker = STYLES.get(rule, ("-", "o"))
        hr = [d["hit_rate"] for d in curve["days"]]
        ax1.errorbar(days, hr, yerr=[d["hit_rate_sem"] for d in curve["days"]], color=color, marker=marker,
                     ls=ls, ms=4, capsize=2, label=f"{rule} (n={curve['mice']})")
        ax1.plot(days, [d["chance"] for d in curve["days"]], color=color, ls=":", lw=0.8, alpha=0.7)
        ax2.errorbar(days, [d["median_time_to_hit_s"] for d in curve["days"]],
                     yerr=[d["median_time_to_hit_s_sem"] for d in curve["days"]], color=color, marker=marker,
                     ls=ls, ms=4, capsize=2, label=rule)
    ax1.set(xlabel="day", ylabel="hit rate", ylim=(0, 1.02),
            title="hit rate (dotted: calibrated chance = baseline windows reaching threshold)")
    ax1.title.set_fontsize(8)
    for ax in (ax1, ax2):
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax2.set(xlabel="day", ylabel="median time to hit (s)", title="time to hit")
    ax1.legend(fontsize=8)
    fig.suptitle(f"{summary['protocol']}: {summary['mice']} mice/rule, seed {summary['seed']}, {summary['level']}")
    fig.savefig(path, dpi=110)
    plt.close(fig)
