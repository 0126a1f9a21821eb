"""Simulated mice on every shipped protocol: hit rate against calibrated chance, day by day, as one figure.

    .venv/bin/python tools/paradigm_learning.py [--mice 4] [--out docs/paradigms] [--only clancy2014,...]

For each protocol it runs ``bcirig simulate`` twice on the same simulated animals (same seeds): mice that
learn with the vectorized rule, and mice that do not learn (rule ``none``), whose hit rate is what the
trial structure and the calibration give by themselves. It writes ``<out>/learning.png`` (one panel per
protocol: both rules' hit rate and the calibrated chance by day, and per-phase hit rates where a protocol
has more than one trial phase), ``<out>/learning.md`` (the same numbers as tables) and
``<out>/learning.json``. Days come from each protocol's ``simulation.days``. Several minutes per protocol.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS = ("francioni2026", "clancy2014", "vendrell2022", "daie2021_lickport")
RULES = ("vectorized", "none")


def simulate(protocol: str, rule: str, mice: int, out: Path, workers: int) -> dict[str, Any]:
    from bcirig.sim.campaign import main as simulate_main

    folder = out / "runs" / f"{protocol}_{rule}"
    code = simulate_main([str(ROOT / "protocols" / f"{protocol}.toml"), "--mice", str(mice), "--rule", rule,
                          "--no-sessions", "--quiet", "--workers", str(workers), "--out", str(folder)])
    if code != 0:
        raise SystemExit(f"bcirig simulate {protocol} --rule {rule} exited {code}")
    summary: dict[str, Any] = json.loads((folder / "summary.json").read_text())
    return summary


def _fmt(x: float) -> str:
    return f"{x:.2f}" if isinstance(x, int | float) and math.isfinite(x) else "–"


def table(protocol: str, runs: dict[str, dict[str, Any]]) -> list[str]:
    """One markdown table: per day, each rule's hit rate (± SEM over mice) and the calibrated chance."""
    v = runs["vectorized"]["curves"]["vectorized"]
    n = runs["none"]["curves"]["none"]
    mice = runs["vectorized"]["mice"]
    lines = [f"### {protocol} ({mice} mice per rule)", "",
             "| day | vectorized hit rate | its calibrated chance | no-learning hit rate | its calibrated chance |",
             "|---|---|---|---|---|"]
    for dv, dn in zip(v["days"], n["days"], strict=True):
        lines.append(f"| {dv['day']} | {_fmt(dv['hit_rate'])} ± {_fmt(dv['hit_rate_sem'])} | {_fmt(dv['chance'])} "
                     f"| {_fmt(dn['hit_rate'])} ± {_fmt(dn['hit_rate_sem'])} | {_fmt(dn['chance'])} |")
    for rule, c in (("vectorized", v), ("none", n)):
        for name, rates in c.get("phases", {}).items():
            shown = [f"day {d + 1}: {_fmt(r)}" for d, r in enumerate(rates) if math.isfinite(r)]
            lines.append(f"\n{rule}, phase `{name}`: " + ", ".join(shown))
    return [*lines, ""]


def figure(results: dict[str, dict[str, dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), squeeze=False)
    for ax, (protocol, runs) in zip(axes[0], results.items(), strict=True):
        for rule, colour in (("vectorized", "tab:green"), ("none", "0.45")):
            c = runs[rule]["curves"][rule]
            days = [d["day"] for d in c["days"]]
            ax.errorbar(days, [d["hit_rate"] for d in c["days"]], yerr=[d["hit_rate_sem"] for d in c["days"]],
                        color=colour, marker="o", ms=3, capsize=2, label=f"{rule}: hit rate")
            ax.plot(days, [d["chance"] for d in c["days"]], color=colour, ls=":", label=f"{rule}: calibrated chance")
            if rule == "vectorized":
                marked = []
                for (name, rates), m in zip(c.get("phases", {}).items(), ("s", "v", "^", "D"), strict=False):
                    pts = [(d + 1, r) for d, r in enumerate(rates) if math.isfinite(r)]
                    if pts and len(pts) < len(days):  # a phase on some days only: mark it
                        marked += ax.plot(*zip(*pts, strict=True), ls="none", marker=m, ms=7, color="tab:purple",
                                          label=f"vectorized, {name} phase")
                if marked:
                    ax.legend(handles=marked, fontsize=7, loc="lower right")
        ax.set_title(protocol)
        ax.set_xlabel("training day")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction of trials")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=4)
    fig.suptitle("Simulated mice on each protocol: hit rate against the calibrated chance (mean ± SEM)")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("--mice", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "docs" / "paradigms"))
    p.add_argument("--only", default="", help="comma-separated protocols (default: all four)")
    p.add_argument("--plot-only", action="store_true", help="redraw from <out>/learning.json, simulate nothing")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n in args.only.split(",") if n] or list(PROTOCOLS)
    cache = out / "learning.json"
    results: dict[str, dict[str, dict[str, Any]]] = json.loads(cache.read_text()) if cache.exists() else {}
    for protocol in [] if args.plot_only else names:
        results[protocol] = {}
        for rule in RULES:
            t0 = time.perf_counter()
            s = simulate(protocol, rule, args.mice, out, args.workers)
            results[protocol][rule] = {k: s[k] for k in ("protocol", "seed", "mice", "days", "frames", "curves")}
            print(f"{protocol} {rule}: {s['frames']} frames in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        cache.write_text(json.dumps(results, indent=1, allow_nan=True))
    ordered = {k: results[k] for k in PROTOCOLS if k in results}
    figure(ordered, out / "learning.png")
    lines = ["# Simulated mice on every shipped protocol", "",
             "Written by `tools/paradigm_learning.py`: hit rate (mean ± SEM over mice) and calibrated chance (the",
             "fraction of baseline windows that reach the day's threshold) by day, for mice that learn with the",
             "vectorized rule and for the same animals without plasticity.", ""]
    for protocol, runs in ordered.items():
        lines += table(protocol, runs)
    (out / "learning.md").write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
