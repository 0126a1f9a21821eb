"""The session at a glance: a PNG beside the session file (readout vs threshold, dF/F, latency)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bcirig.recording import SessionFile
from bcirig.recording.latency import interval_ms, stats_ms
from bcirig.recording.layout import FEEDBACK_STAMPS

OUTCOME_COLOURS = {"hit": "tab:green", "timeout": "0.6", "abort": "tab:red"}


def plot_session(path: str | Path, out: str | Path | None = None) -> Path:
    """Write ``session.png`` (or ``out``) for a session file; returns the PNG's path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    out = Path(out) if out else path.with_suffix(".png")
    fig = session_figure(path)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def session_figure(path: str | Path) -> Any:
    """The session figure (a matplotlib Figure: readout vs threshold, dF/F per ROI, latency histogram)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    with SessionFile(path) as sf:
        ro, fb, trials = sf.table("readout"), sf.table("feedback"), sf.table("trials")
        rois = sf.rois()
        rate = float(_protocol_rate(sf.protocol_text))
        calib: dict[str, float] = next((e["data"] for e in sf.events() if e["name"] == "calibration"), {})
    names = [n.decode() for n in rois.get("name", [])]
    groups = [g.decode() for g in rois.get("group", [])]
    t = fb["frame"] / rate
    fig, axes = plt.subplots(3, 1, figsize=(11, 8.5), height_ratios=[2.2, 2, 1.2], constrained_layout=True)
    ax = axes[0]
    zero = float(calib.get("baseline_min", 0.0))
    ax.plot(ro["frame"] / rate, ro["readout"] - zero, lw=0.6, color="k", label="readout − baseline min")
    ax.plot(t, fb["threshold"], lw=1.2, color="tab:orange", label="threshold")
    closed = fb["phase"] == b"closed_loop"
    if closed.any():
        ax.axvspan(0, t[np.argmax(closed)], color="0.92", label="baseline")
    for outcome, frame in zip(trials["outcome"], trials["outcome_frame"], strict=True):
        ax.axvline(frame / rate, color=OUTCOME_COLOURS.get(outcome.decode(), "b"), lw=0.8, alpha=0.8)
    hits = int((trials["outcome"] == b"hit").sum())
    ax.set_title(f"{path.parent.name}: {len(trials['outcome'])} trials, {hits} hits "
                 "(green hit, grey timeout, red abort)")
    ax.set_ylabel("readout (dF/F)")
    ax.legend(loc="upper left", fontsize=8)
    ax = axes[1]
    dff = ro["dff"]
    if dff.size:
        spacing = max(0.5, float(np.nanpercentile(dff, 99)) if np.isfinite(dff).any() else 1.0)
        for i in range(dff.shape[1]):
            colour = "tab:blue" if groups and groups[i].endswith("+") else "tab:purple"
            ax.plot(ro["frame"] / rate, dff[:, i] + i * spacing, lw=0.5, color=colour)
        ax.set_yticks([i * spacing for i in range(dff.shape[1])],
                      [f"{n} ({g})" for n, g in zip(names, groups, strict=False)] or None, fontsize=7)
    ax.set_xlabel("time (s)")
    ax.set_title("dF/F per ROI")
    ax = axes[2]
    lat = interval_ms(fb["t_ns"], FEEDBACK_STAMPS, "arrive", "task_out")
    if lat.size:
        st = stats_ms(lat)
        ax.hist(lat, bins=np.linspace(0, max(1.0, float(np.percentile(lat, 99.5))), 80), color="tab:blue")
        ax.axvline(st["median_ms"], color="k", lw=1, label=f"median {st['median_ms']:.2f} ms")
        ax.axvline(st["p99_ms"], color="tab:red", lw=1, label=f"p99 {st['p99_ms']:.2f} ms")
        ax.legend(fontsize=8)
    ax.set_xlabel("frame arrival → feedback/command sent (ms)")
    ax.set_ylabel("frames")
    return fig


def _protocol_rate(text: str) -> float:
    import tomllib

    try:
        return float(tomllib.loads(text).get("imaging", {}).get("frame_rate_hz", 30.0))
    except (tomllib.TOMLDecodeError, TypeError, ValueError):
        return 30.0
