"""A subject's report: day by day, what a scientist checks every evening, as one HTML page with PNG figures.

``bcirig summary SUBJECT_DIR`` (or a list of session files) writes ``index.html``, one PNG per figure,
``days.csv`` (one row per session) and ``report.json`` (every number, with the lick histograms and the
trial-aligned traces). The page needs no Python to be read. Per session:

* hit rate against the calibrated chance rate: chance is the fraction of the day's resampled baseline
  windows whose maximum reaches the threshold the mouse faced (the calibration's achieved fraction; the
  target is drawn beside it);
* time to hit: median seconds from trial start to the threshold crossing, with the quartiles;
* threshold: in readout units above the baseline minimum, and in baseline-noise units (z);
* P+ and P- activity: each group's mean soma dF/F during the baseline and during closed-loop feedback;
* motion: median and 95th percentile of the correction's size (pixels);
* latency: median and 99th percentile from frame arrival to the feedback or reward command (ms);
* licks around reward: lick rate in 250 ms bins from 2 s before to 4 s after each reward.

Where dendrite ROIs exist it adds the seed paper's analysis of opposing instructive signals: trial-
aligned dendrite and soma dF/F of P+ and P-, hits against misses, pooled over the sessions.
"""

from __future__ import annotations

import csv
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bcirig.export.common import SessionData, load_session_data
from bcirig.messages import Outcome, OutcomeCounts
from bcirig.processing.rois import RoiKind
from bcirig.recording import SessionFileError
from bcirig.recording.latency import interval_ms, stats_ms
from bcirig.recording.layout import FEEDBACK_STAMPS

LICK_WINDOW_S = (-2.0, 4.0)
LICK_BIN_S = 0.25
ALIGN_BEFORE_S, ALIGN_AFTER_S = 1.0, 6.0  # trial-aligned traces: around the start of closed-loop feedback
DAY_COLUMNS = (
    "session", "date", "complete", "trials", "hits", "aborts", "timeouts", "hit_rate", "chance", "target",
    "median_time_to_hit_s", "time_to_hit_q1_s", "time_to_hit_q3_s", "threshold", "threshold_z", "rule",
    "motion_median_px", "motion_p95_px", "latency_median_ms", "latency_p99_ms", "rewards", "licks",
    "lick_rate_before_hz", "lick_rate_after_hz",
)


@dataclass
class Day:
    """One session's numbers."""

    path: str
    values: dict[str, Any]
    groups: dict[str, dict[str, float]]  # group -> {"baseline": mean dF/F, "trials": mean dF/F}
    lick_histogram_hz: list[float]
    aligned: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)  # "P+ soma" -> hit/miss -> rows


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def _quantile(x: np.ndarray, q: float) -> float:
    return float(np.quantile(x, q)) if len(x) else float("nan")


def day_numbers(data: SessionData) -> Day:
    """Everything the report shows for one session (a plain function of the file's tables)."""
    rate = data.frame_rate_hz
    tr, fb, ro = data.trials, data.feedback, data.readout
    outcome = np.array([o.decode() for o in tr["outcome"]])
    hit = outcome == Outcome.HIT.value
    tally = OutcomeCounts.of(outcome)
    tth = tr["frames"][hit] / rate if hit.any() else np.array([])
    calib = data.calibration
    shift = np.hypot(*ro["shift"].T) if len(ro["frame"]) else np.array([])
    latency = stats_ms(interval_ms(fb["t_ns"], FEEDBACK_STAMPS, "arrive", "task_out"))
    # reward times: the frames of the reward commands; licks on the frame clock
    actions = [x.decode() for x in data.commands["action"]]
    reward_frames = data.commands["frame"][[k in ("reward", "reward_opto") for k in actions]]
    reward_t = data.time_of(reward_frames)
    licks = [e for e in data.events if e["name"] == "lick"]
    host = np.array([e["data"].get("host_ns", -1) for e in licks], np.float64)
    lick_t = np.where(host > 0, data.host_time(host), data.time_of(np.array([e["frame"] for e in licks], np.int64)))
    edges = np.arange(LICK_WINDOW_S[0], LICK_WINDOW_S[1] + 1e-9, LICK_BIN_S)
    counts = np.zeros(len(edges) - 1)
    for t in reward_t:
        counts += np.histogram(lick_t - t, bins=edges)[0]
    hist = counts / (LICK_BIN_S * len(reward_t)) if len(reward_t) else np.full(len(counts), np.nan)
    mid = (edges[:-1] + edges[1:]) / 2
    before = _nanmean(hist[(mid > -2) & (mid < 0)]) if len(reward_t) else float("nan")
    after = _nanmean(hist[(mid > 0) & (mid < 2)]) if len(reward_t) else float("nan")
    # group activity: somata of each decoder group, baseline frames and closed-loop feedback frames
    phase_of = {int(f): p for f, p in zip(fb["frame"], fb["phase"], strict=True)}
    state_of = {int(f): s for f, s in zip(fb["frame"], fb["state"], strict=True)}
    base_rows = np.array([phase_of.get(int(f)) == b"baseline" for f in ro["frame"]])
    active_rows = np.array([state_of.get(int(f)) == b"active" for f in ro["frame"]])
    groups: dict[str, dict[str, float]] = {}
    for g in sorted({r.group for r in data.rois} - {"none"}):
        idx = data.rois.indices(group=g, kind=RoiKind.SOMA)
        if len(idx):
            dff = ro["dff"][:, idx].astype(np.float64)
            groups[g] = {"baseline": _nanmean(dff[base_rows]), "trials": _nanmean(dff[active_rows])}
    created = data.attrs.get("created_unix")
    values = {
        "session": data.path.parent.name or data.path.name,
        "date": _date(created),
        "complete": bool(data.attrs.get("complete", False)),
        **tally.as_dict(),
        "chance": float(calib.get("achieved_fraction", float("nan"))),
        "target": float(calib.get("target_fraction", float("nan"))),
        "median_time_to_hit_s": _quantile(tth, 0.5), "time_to_hit_q1_s": _quantile(tth, 0.25),
        "time_to_hit_q3_s": _quantile(tth, 0.75),
        "threshold": float(calib.get("threshold", float("nan"))),
        "threshold_z": float(calib.get("threshold_z", float("nan"))),
        "rule": str(calib.get("rule", "stricter")),
        "motion_median_px": _quantile(shift[np.isfinite(shift)], 0.5),
        "motion_p95_px": _quantile(shift[np.isfinite(shift)], 0.95),
        "latency_median_ms": latency["median_ms"], "latency_p99_ms": latency["p99_ms"],
        "rewards": len(reward_t), "licks": len(licks),
        "lick_rate_before_hz": before, "lick_rate_after_hz": after,
    }
    return Day(path=str(data.path), values=values, groups=groups, lick_histogram_hz=hist.tolist(),
               aligned=_aligned(data, hit))


def _date(created: Any) -> str:
    import datetime as dt

    try:
        return dt.datetime.fromtimestamp(float(created), tz=dt.UTC).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError):
        return ""


def _aligned(data: SessionData, hit: np.ndarray) -> dict[str, dict[str, list[list[float]]]]:
    """Per group and ROI kind (only when dendrites exist): dF/F around each trial's feedback start."""
    kinds = {r.kind for r in data.rois}
    if RoiKind.DENDRITE not in kinds:
        return {}
    rate = data.frame_rate_hz
    grey = int(data.protocol.get("trials", {}).get("grey_frames", 15))
    before, after = round(ALIGN_BEFORE_S * rate), round(ALIGN_AFTER_S * rate)
    ro = data.readout
    row_of = {int(f): i for i, f in enumerate(ro["frame"])}
    out: dict[str, dict[str, list[list[float]]]] = {}
    for g in sorted({r.group for r in data.rois if r.kind == RoiKind.SOMA} - {"none"}):
        somata = data.rois.indices(group=g, kind=RoiKind.SOMA)
        names = {data.rois[int(i)].name for i in somata}
        dendrites = np.array([i for i, r in enumerate(data.rois) if r.kind == RoiKind.DENDRITE
                              and (r.parent in names or r.group == g)], np.intp)
        for kind, idx in ((RoiKind.SOMA, somata), (RoiKind.DENDRITE, dendrites)):
            if not len(idx):
                continue
            trace = np.nanmean(ro["dff"][:, idx].astype(np.float64), axis=1)
            rows: dict[str, list[list[float]]] = {"hit": [], "miss": []}
            for start, is_hit in zip(data.trials["start_frame"], hit, strict=True):
                go = int(start) + grey
                r0 = row_of.get(go - before)
                if r0 is None or r0 + before + after > len(trace):
                    continue
                rows["hit" if is_hit else "miss"].append(trace[r0:r0 + before + after].tolist())
            out[f"{g} {kind}"] = rows
    return out


# ------------------------------------------------------------------------------------------- figures
def _figures(days: list[Day], out: Path, rate_hz: float) -> list[tuple[str, str, str]]:
    """Write the PNGs; returns (file, title, caption) per figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(1, len(days) + 1)
    v = {k: np.array([d.values[k] for d in days], dtype=float) for k in DAY_COLUMNS
         if k not in ("session", "date", "rule", "complete")}
    labels = [d.values["session"] for d in days]
    figs: list[tuple[str, str, str]] = []

    def save(fig: Any, name: str, title: str, caption: str) -> None:
        fig.savefig(out / name, dpi=72)
        plt.close(fig)
        figs.append((name, title, caption))

    def axes(ylabel: str) -> tuple[Any, Any]:
        fig, ax = plt.subplots(figsize=(6.4, 3.0), constrained_layout=True)
        ax.set_xticks(x, labels if len(days) <= 8 else [str(i) for i in x], fontsize=7,
                      rotation=20 if len(days) <= 8 else 0)
        ax.set_xlabel("session")
        ax.set_ylabel(ylabel)
        return fig, ax

    fig, ax = axes("fraction")
    ax.plot(x, v["hit_rate"], "o-", color="k", label="hit rate")
    ax.plot(x, v["chance"], "s--", color="tab:orange", label="calibrated chance (baseline windows reaching threshold)")
    ax.plot(x, v["target"], ":", color="0.5", label="calibration target")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left")
    save(fig, "hit_rate.png", "Hit rate against calibrated chance",
         "Learning shows as a hit rate above the chance line; chance is what the threshold allowed on that day's "
         "own baseline.")
    fig, ax = axes("time to hit (s)")
    ax.plot(x, v["median_time_to_hit_s"], "o-", color="k", label="median")
    ax.fill_between(x, v["time_to_hit_q1_s"], v["time_to_hit_q3_s"], color="0.85", label="quartiles")
    ax.legend(fontsize=7)
    save(fig, "time_to_hit.png", "Time to hit", "Seconds from trial start (grey screen included) to the threshold "
         "crossing, over the session's hits.")
    fig, ax = axes("threshold (readout above baseline min)")
    ax.plot(x, v["threshold"], "o-", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(x, v["threshold_z"], "s--", color="tab:red")
    ax2.set_ylabel("threshold (baseline noise units, z)", color="tab:red")
    save(fig, "threshold.png", "Threshold", "Blue: the threshold in readout units; red: in baseline-noise units, "
         "the quantity the across-day rule carries forward.")
    fig, ax = axes("mean soma dF/F")
    groups = sorted({g for d in days for g in d.groups})
    colours = {"P+": "tab:blue", "P-": "tab:purple"}
    for g in groups:
        c = colours.get(g)
        ax.plot(x, [d.groups.get(g, {}).get("trials", np.nan) for d in days], "o-", color=c, label=f"{g} trials")
        ax.plot(x, [d.groups.get(g, {}).get("baseline", np.nan) for d in days], "o:", color=c, label=f"{g} baseline")
    ax.axhline(0, color="0.7", lw=0.6)
    ax.legend(fontsize=7, ncol=2)
    save(fig, "groups.png", "P+ and P- activity", "Mean dF/F of each group's somata during the baseline (dotted) "
         "and during closed-loop feedback (solid).")
    fig, ax = axes("motion correction (px)")
    ax.plot(x, v["motion_median_px"], "o-", color="k", label="median")
    ax.plot(x, v["motion_p95_px"], "s--", color="0.5", label="95th percentile")
    ax.legend(fontsize=7)
    save(fig, "motion.png", "Motion", "Size of the rigid correction applied to each frame.")
    fig, ax = axes("frame arrival -> command (ms)")
    ax.plot(x, v["latency_median_ms"], "o-", color="k", label="median")
    ax.plot(x, v["latency_p99_ms"], "s--", color="tab:red", label="99th percentile")
    ax.legend(fontsize=7)
    save(fig, "latency.png", "Latency", "From a frame's arrival to the feedback and reward command it caused.")
    fig, ax = plt.subplots(figsize=(6.4, 3.0), constrained_layout=True)
    mid = np.arange(LICK_WINDOW_S[0], LICK_WINDOW_S[1], LICK_BIN_S) + LICK_BIN_S / 2
    cmap = plt.get_cmap("viridis")
    for i, d in enumerate(days):
        ax.plot(mid, d.lick_histogram_hz, color=cmap(i / max(1, len(days) - 1)), lw=1.2,
                label=f"{d.values['session']} ({d.values['rewards']} rewards)")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("time from reward (s)")
    ax.set_ylabel("lick rate (Hz)")
    ax.legend(fontsize=7)
    save(fig, "licks.png", "Licks around reward", "Lick rate in 250 ms bins around each reward, averaged over the "
         "session's rewards (anticipatory licking shows before 0).")
    aligned = _pooled_aligned(days)
    if aligned:
        fig, axs = plt.subplots(1, 2, figsize=(7.6, 3.0), constrained_layout=True, sharey=True)
        t = (np.arange(round((ALIGN_BEFORE_S + ALIGN_AFTER_S) * rate_hz)) - round(ALIGN_BEFORE_S * rate_hz)) / rate_hz
        for ax, g in zip(axs, ("P+", "P-"), strict=True):
            for kind, style in ((RoiKind.SOMA, "-"), (RoiKind.DENDRITE, "--")):
                for outcome, c in (("hit", "tab:green"), ("miss", "0.4")):
                    rows = aligned.get(f"{g} {kind}", {}).get(outcome, [])
                    if rows:
                        ax.plot(t, np.nanmean(np.array(rows), axis=0), style, color=c,
                                label=f"{kind}, {outcome}es ({len(rows)})" if outcome == "miss" else
                                f"{kind}, hits ({len(rows)})")
            ax.axvline(0, color="k", lw=0.6)
            ax.set_title(g, fontsize=9)
            ax.set_xlabel("time from feedback start (s)")
            ax.legend(fontsize=6)
        axs[0].set_ylabel("mean dF/F")
        save(fig, "dendrites.png", "Dendrites and somata, hits against misses",
             "Trial-aligned dF/F of P+ and P- somata (solid) and their apical dendrites (dashed), hits against "
             "misses, pooled over the sessions: the seed paper's test for opposing instructive signals.")
    return figs


def _pooled_aligned(days: list[Day]) -> dict[str, dict[str, list[list[float]]]]:
    out: dict[str, dict[str, list[list[float]]]] = {}
    for d in days:
        for key, rows in d.aligned.items():
            slot = out.setdefault(key, {"hit": [], "miss": []})
            for outcome in ("hit", "miss"):
                slot[outcome].extend(rows.get(outcome, []))
    return out


# ------------------------------------------------------------------------------------------- the page
def _cell(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.3g}"
    return html.escape(str(v))


def _page(subject: str, days: list[Day], figs: list[tuple[str, str, str]], notes: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in DAY_COLUMNS)
    rows = "".join("<tr>" + "".join(f"<td>{_cell(d.values[c])}</td>" for c in DAY_COLUMNS) + "</tr>" for d in days)
    figures = "".join(f'<figure><h2>{html.escape(title)}</h2><img src="{name}" alt="{html.escape(title)}">'
                      f"<figcaption>{html.escape(caption)}</figcaption></figure>" for name, title, caption in figs)
    notes_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>bcirig report: {html.escape(subject)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:1em auto;color:#222}}
table{{border-collapse:collapse;font-size:11px}}td,th{{border:1px solid #ccc;padding:2px 4px;text-align:right}}
figure{{margin:1.5em 0}}figcaption{{font-size:12px;color:#555}}h2{{font-size:15px;margin:0}}</style></head>
<body><h1>{html.escape(subject)}: {len(days)} sessions</h1>
<p>Written by <code>bcirig summary</code>. The numbers are in <a href="days.csv">days.csv</a> and
<a href="report.json">report.json</a>.</p>
<div style="overflow-x:auto"><table><tr>{head}</tr>{rows}</table></div>
{figures}
<h2>Notes</h2><ul>{notes_html}</ul>
</body></html>
"""


def find_sessions(paths: list[str | Path]) -> list[Path]:
    """Session files from a subject folder (its ``*/session.h5``) or given files, oldest first."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(p.glob("*/session.h5")) or sorted(p.glob("**/session.h5"))
        elif p.is_file():
            found.append(p)
        else:
            raise SessionFileError(f"{p}: no such subject folder or session file")
    if not found:
        raise SessionFileError(f"{', '.join(map(str, paths))}: no session files (expected <subject>/<date>_<n>/"
                               "session.h5)")
    return found


def write_report(paths: list[str | Path], out: str | Path | None = None) -> Path:
    """Write the subject's report; returns the HTML page's path. Unreadable sessions are listed, not fatal."""
    sessions = find_sessions(paths)
    days: list[Day] = []
    notes: list[str] = []
    rate = 30.0
    loaded = []
    for s in sessions:
        try:
            loaded.append(load_session_data(s))
        except SessionFileError as exc:
            notes.append(f"left out: {exc}")
    loaded.sort(key=lambda d: float(d.attrs.get("created_unix", 0.0)))
    for data in loaded:
        days.append(day_numbers(data))
        rate = data.frame_rate_hz
        if not data.attrs.get("complete", False):
            notes.append(f"{data.path}: incomplete file (the session did not close it)")
    if not days:
        raise SessionFileError("no readable session: " + "; ".join(notes))
    first = Path(paths[0])
    subject = str(loaded[0].attrs.get("subject") or (first.name if first.is_dir() else first.parent.parent.name))
    out = Path(out) if out else (first / "report" if first.is_dir() else Path("report"))
    out.mkdir(parents=True, exist_ok=True)
    figs = _figures(days, out, rate)
    notes += [
        "chance = fraction of the day's resampled baseline windows whose maximum reaches the threshold in force "
        "(the calibration's achieved fraction); with a short baseline it can fall well below the target.",
        "time to hit counts from trial start, grey screen included; latency from frame arrival to the task's "
        "command; licks are the lick sensor's reports, placed on the frame clock by their arrival.",
    ]
    with open(out / "days.csv", "w", newline="") as f:
        w = csv.writer(f)
        groups = sorted({g for d in days for g in d.groups})
        w.writerow([*DAY_COLUMNS, *[f"{g} dff {phase}" for g in groups for phase in ("baseline", "trials")]])
        for d in days:
            w.writerow([d.values[c] for c in DAY_COLUMNS]
                       + [d.groups.get(g, {}).get(ph, "") for g in groups for ph in ("baseline", "trials")])
    report = {
        "subject": subject, "sessions": [d.path for d in days],
        "days": [{**d.values, "groups": d.groups, "lick_histogram_hz": d.lick_histogram_hz} for d in days],
        "lick_bins_s": np.arange(LICK_WINDOW_S[0], LICK_WINDOW_S[1] + 1e-9, LICK_BIN_S).tolist(),
        "aligned_mean_dff": {k: {o: np.nanmean(np.array(r), axis=0).round(5).tolist() if r else []
                                 for o, r in rows.items()} for k, rows in _pooled_aligned(days).items()},
        "figures": [f[0] for f in figs], "notes": notes,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1, allow_nan=True))
    page = out / "index.html"
    page.write_text(_page(subject, days, figs, notes))
    return page


__all__ = ["DAY_COLUMNS", "Day", "day_numbers", "find_sessions", "write_report"]
