"""The one-screen session summary: trials, hits, frames, losses and per-stage latency, read from the file."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from bcirig.messages import Outcome, OutcomeCounts
from bcirig.recording import SessionFile
from bcirig.recording.latency import interval_ms, stats_ms
from bcirig.recording.layout import ACK_STAMPS, FEEDBACK_STAMPS, READOUT_STAMPS

# (label, table, from-stamp, to-stamp)
INTERVALS = [
    ("registration", "readout", "arrive", "registered"),
    ("ROI extraction", "readout", "registered", "extracted"),
    ("F0, dF/F, decoder", "readout", "extracted", "decoded"),
    ("frame arrival -> readout published", "readout", "arrive", "published"),
    ("readout transport (pipeline -> task)", "feedback", "published", "task_in"),
    ("task decision", "feedback", "task_in", "task_out"),
    ("frame arrival -> feedback/command sent", "feedback", "arrive", "task_out"),
    ("valve round trip (command line -> reply)", "acks", "valve_sent", "valve_ack"),
    ("command sent -> valve ack published", "acks", "task_out", "device_ack"),
]
_STAMPS = {"readout": READOUT_STAMPS, "feedback": FEEDBACK_STAMPS, "acks": ACK_STAMPS}


def latency_stats(sf: SessionFile) -> dict[str, dict[str, float]]:
    """Median, p99 and max (ms) of each stage interval over all frames that carry both stamps."""
    out: dict[str, dict[str, float]] = {}
    cache: dict[str, np.ndarray] = {}
    for label, table, a, b in INTERVALS:
        if table not in cache:
            cache[table] = sf.table(table)["t_ns"]
        d = interval_ms(cache[table], _STAMPS[table], a, b)
        if d.size:
            out[label] = stats_ms(d)
    transfer = _acquired_to_arrived(sf)
    if transfer is not None:
        out = {"frame sent -> arrived (sender on this clock)": stats_ms(transfer), **out}
    return out


def _acquired_to_arrived(sf: SessionFile) -> np.ndarray | None:
    """Microscope timestamp -> arrival (ms), only when the sender stamps on this machine's monotonic clock
    (``bcirig send`` on the rig PC): then every difference is small and positive; another PC's clock is not."""
    if "acquisition" not in sf.f:
        return None
    acq = sf.table("acquisition")
    ok = (acq["t_acq_ns"] > 0) & (acq["t_arrive_ns"] > 0)
    if not ok.any():
        return None
    d = (acq["t_arrive_ns"][ok] - acq["t_acq_ns"][ok]) / 1e6
    if d.min() < 0 or d.max() > 10_000 or d.max() == 0:  # another clock, or no transfer at all (simulated)
        return None
    return np.asarray(d)


def session_summary(sf: SessionFile) -> dict[str, Any]:
    """Counts and latencies of a (finished or running) session."""
    trials = sf.table("trials")
    counts = OutcomeCounts.of(trials["outcome"])
    readout = sf.table("readout")
    feedback = sf.table("feedback")
    nodes = {n.decode(): json.loads(c) for n, c in zip(sf.table("nodes")["node"], sf.table("nodes")["counters"],
                                                       strict=True)}
    acquired = nodes.get("pipeline", {})
    acq = sf.table("acquisition") if "acquisition" in sf.f else {}
    # the pipeline node's own count; if it died before reporting it, the frames the file recorded it sending
    frames_published = int(acquired.get("frames", len(acq["frame"]) if acq else -1))
    events = sf.events()
    calib: dict[str, Any] = next((e["data"] for e in events if e["name"] == "calibration"), {})
    hit_frames = trials["frames"][trials["outcome"] == Outcome.HIT.value.encode()] if counts.hits else np.array([])
    acks = sf.table("acks")
    return {
        "complete": bool(sf.attrs.get("complete", False)),
        **counts.as_dict(),
        "median_frames_to_hit": float(np.median(hit_frames)) if counts.hits else float("nan"),
        "threshold": calib.get("threshold", float("nan")),
        "target_hit_fraction": calib.get("target_fraction", float("nan")),
        # with a short baseline the window maxima take few values (one transient tops many overlapping
        # windows), so the fraction that reaches the threshold can fall well short of the target
        "achieved_hit_fraction": calib.get("achieved_fraction", float("nan")),
        "calibration_rule": calib.get("rule", ""),
        "frames_published": frames_published,
        "frames_processed": int(readout["frame"].size),
        "frames_decided": int(feedback["frame"].size),
        "bad_frames": int((~readout["valid"]).sum()) if readout["valid"].size else 0,
        "rewards_acknowledged": int(acks["ok"].sum()) if acks["ok"].size else 0,
        "rewards_refused": int((~acks["ok"]).sum()) if acks["ok"].size else 0,
        "dropped_messages": int(sum(c.get("gaps", 0) for c in nodes.values())),
        "late_frames": int(acquired.get("late_frames", 0)),
        # microscope images lost in gaps of its index, and rejected (wrong shape, dtype, plane): the node's
        # totals, else (a crashed node) the per-frame counts in the acquisition table
        "dropped_frames": int(acquired.get("dropped_frames", np.sum(acq["dropped"]) if acq else 0)),
        "malformed_frames": int(acquired.get("malformed_frames", np.sum(acq["malformed"]) if acq else 0)),
        "malformed_input": int(acquired.get("source_malformed", 0)),
        "source_reconnects": int(acquired.get("source_reconnects", 0)),
        "latency": latency_stats(sf),
    }


def _fmt(x: float, spec: str = ".3f") -> str:
    return "n/a" if isinstance(x, float) and math.isnan(x) else format(x, spec)


def format_summary(s: dict[str, Any], path: str = "") -> str:
    """A one-screen text rendering of :func:`session_summary`."""
    lines = [f"Session {path}" if path else "Session", ""]
    lines.append(f"  trials {s['trials']}   hits {s['hits']}   aborts {s['aborts']}   timeouts {s['timeouts']}"
                 f"   hit rate {_fmt(s['hit_rate'], '.0%')}")
    lines.append(f"  calibrated for {_fmt(s['target_hit_fraction'], '.0%')} of baseline windows: "
                 f"{_fmt(s.get('achieved_hit_fraction', float('nan')), '.1%')} reach the threshold (chance)")
    lines.append(f"  threshold {_fmt(s['threshold'], '.4f')} dF/F above baseline minimum;"
                 f" median frames to hit {_fmt(s['median_frames_to_hit'], '.0f')}")
    lines.append(f"  frames published {s['frames_published']}   processed {s['frames_processed']}"
                 f"   decided {s['frames_decided']}   bad {s['bad_frames']}   late {s['late_frames']}")
    lines.append(f"  microscope frames dropped {s.get('dropped_frames', 0)}   rejected (shape/dtype)"
                 f" {s.get('malformed_frames', 0)}   unreadable input {s.get('malformed_input', 0)}"
                 f"   sender reconnects {s.get('source_reconnects', 0)}")
    lines.append(f"  dropped messages {s['dropped_messages']}   rewards acknowledged {s['rewards_acknowledged']}"
                 f" (refused by the valve's limits: {s['rewards_refused']})"
                 f"   file complete: {'yes' if s['complete'] else 'NO'}")
    lines.append("")
    lines.append(f"  {'latency per stage':44s} {'median':>9s} {'p99':>9s} {'max':>9s}  (ms)")
    for label, st in s["latency"].items():
        lines.append(f"  {label:44s} {st['median_ms']:9.3f} {st['p99_ms']:9.3f} {st['max_ms']:9.3f}")
    return "\n".join(lines)
