"""Offline replay: recorded frames through the same Pipeline and Task objects, compared with the recording.

Every readout value is compared bit for bit (NaN equals NaN) and every per-frame decision (phase, trial
state, trial number, screen, grating angle, reward) and the trial table must match. "Identical" means
all of them do.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from bcirig.config import parse_protocol
from bcirig.control import Task
from bcirig.processing import Pipeline, RoiSet
from bcirig.recording import SessionFile, SessionFileError

DECISION_COLUMNS = ("phase", "state", "trial", "screen", "angle_deg", "reward")


@dataclass
class ReplayReport:
    """What replay found."""

    path: str
    frames: int = 0
    readouts_compared: int = 0
    readout_mismatches: int = 0
    decisions_compared: int = 0
    decision_mismatches: int = 0
    trials_recorded: int = 0
    trials_replayed: int = 0
    trial_table_identical: bool = False
    first_mismatch: str = ""
    seconds: float = 0.0
    mismatches: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """True only when every readout, every decision and the trial table match."""
        return (self.readout_mismatches == 0 and self.decision_mismatches == 0 and self.trial_table_identical
                and self.readouts_compared > 0)

    @property
    def frames_per_s(self) -> float:
        """Replay speed."""
        return self.frames / self.seconds if self.seconds > 0 else float("nan")

    def text(self) -> str:
        """Human-readable verdict."""
        verdict = "IDENTICAL" if self.identical else "DIFFERENT"
        lines = [
            f"Replay of {self.path}: {verdict}",
            f"  frames replayed {self.frames} at {self.frames_per_s:,.0f} frames/s",
            f"  readouts compared {self.readouts_compared}, mismatches {self.readout_mismatches}",
            f"  decisions compared {self.decisions_compared}, mismatches {self.decision_mismatches}",
            f"  trials recorded {self.trials_recorded}, replayed {self.trials_replayed}, "
            f"table {'identical' if self.trial_table_identical else 'DIFFERENT'}",
        ]
        if self.first_mismatch:
            lines.append(f"  first mismatch: {self.first_mismatch}")
        return "\n".join(lines)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float | np.floating) and isinstance(b, float | np.floating):
        return bool(np.float64(a).tobytes() == np.float64(b).tobytes() or (np.isnan(a) and np.isnan(b)))
    return bool(a == b)


def replay(path: str | Path, progress: TextIO | None = None, chunk: int = 256) -> ReplayReport:
    """Replay a session file; raises SessionFileError if it cannot be replayed."""
    rep = ReplayReport(path=str(path))
    with SessionFile(path) as sf:
        if not sf.has_frames:
            raise SessionFileError(f"{path}: recorded without frames (recording.frames = false); nothing to replay")
        protocol = parse_protocol(sf.protocol_text, f"{path} (protocol attribute)")
        carried = json.loads(str(sf.attrs.get("carried", "{}")) or "{}")
        pipeline = Pipeline(protocol, RoiSet.from_arrays(sf.rois()), sf.reference())
        task = Task(protocol, carried=carried or None)
        rec_ro = sf.table("readout")
        rec_fb = sf.table("feedback")
        ro_row = {int(f): i for i, f in enumerate(rec_ro["frame"])}
        fb_row = {int(f): i for i, f in enumerate(rec_fb["frame"])}
        index = sf.frame_index()[:, 0]
        frames = sf.frames()
        t0 = time.perf_counter()
        next_print = t0 + 1.0
        for start in range(0, len(index), chunk):
            block = frames[start:start + chunk]
            for j, data in enumerate(block):
                fi = int(index[start + j])
                if fi not in ro_row:  # recorded frame the live pipeline never reported (end of session)
                    continue
                readout = pipeline.process(data, fi)
                step = task.step(readout)
                rep.frames += 1
                r = ro_row[fi]
                rep.readouts_compared += 1
                same_valid = bool(readout.valid) == bool(rec_ro["valid"][r])
                if not (_same(readout.readout, rec_ro["readout"][r]) and same_valid):
                    rep.readout_mismatches += 1
                    _note(rep, f"frame {fi}: readout {readout.readout!r} != recorded {rec_ro['readout'][r]!r}")
                if fi in fb_row:
                    k = fb_row[fi]
                    fb = step.feedback
                    mine = (fb.phase.value, fb.state.value, fb.trial, fb.screen.value, np.float32(fb.angle_deg),
                            fb.reward)
                    theirs = tuple(rec_fb[c][k].decode() if isinstance(rec_fb[c][k], bytes) else rec_fb[c][k]
                                   for c in DECISION_COLUMNS)
                    rep.decisions_compared += 1
                    if not all(_same(a, b) for a, b in zip(mine, theirs, strict=True)):
                        rep.decision_mismatches += 1
                        _note(rep, f"frame {fi}: decision {mine} != recorded {theirs}")
            if progress is not None and time.perf_counter() >= next_print:
                progress.write(f"  replayed {rep.frames}/{len(index)} frames\n")
                progress.flush()
                next_print = time.perf_counter() + 1.0
        rep.seconds = time.perf_counter() - t0
        trials = sf.table("trials")
        rep.trials_recorded = len(trials["trial"])
        mine_trials = [(t.trial, t.start_frame, t.outcome.value, t.outcome_frame)
                       for t in task.trials if t.outcome is not None]
        theirs_trials = [(int(a), int(b), c.decode(), int(d)) for a, b, c, d in
                         zip(trials["trial"], trials["start_frame"], trials["outcome"], trials["outcome_frame"],
                             strict=True)]
        rep.trials_replayed = len(mine_trials)
        rep.trial_table_identical = mine_trials == theirs_trials
        if not rep.trial_table_identical:
            _note(rep, f"trial table differs: replayed {mine_trials[:3]}... recorded {theirs_trials[:3]}...")
    return rep


def _note(rep: ReplayReport, text: str) -> None:
    if not rep.first_mismatch:
        rep.first_mismatch = text
    if len(rep.mismatches) < 20:
        rep.mismatches.append(text)


def main(path: str) -> int:
    """``bcirig replay``: print the verdict; exit 0 only if identical."""
    rep = replay(path, progress=sys.stderr)
    print(rep.text())
    return 0 if rep.identical else 1
