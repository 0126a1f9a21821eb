"""Offline replay: recorded frames through the same Pipeline and Task objects, compared with the recording.

Two uses:

* **identity** (``bcirig replay SESSION``): every column the decisions came from is compared bit for bit
  (NaN equals NaN): per frame the readout's validity, shift, correlation, F, neuropil, F0, dF/F,
  ``readout_raw`` and ``readout``; every feedback column (phase, trial state, trial, trial frame, screen,
  angle, sound, tone, reward, opto, normalised readout, threshold); every device command; the calibration
  windows; and the trial table. "Identical" means all of them are. A session that ended in the safe
  state is replayed up to its safe stop, which is then applied as the recorded event it is (the task's
  safe-state row carries the last frame's number, so it is compared with the replayed safe stop, not with
  that frame's decision).
* **what-if** (``bcirig replay SESSION --set KEY=VALUE ...``): the same frames through a changed protocol
  (threshold, decoder and its groups, smoothing, F0 rule ...), reported trial by trial beside the
  recording. Keys are validated as a protocol file is, with the same one-line errors.

A session recorded without frames is replayed from its recorded F and neuropil onward
(``Pipeline.process_traces``): registration and extraction are then not re-run.
"""

from __future__ import annotations

import enum
import json
import math
import re
import sys
import textwrap
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from bcirig.config import Protocol, parse_protocol
from bcirig.control import Task
from bcirig.interfaces import TaskStep
from bcirig.messages import EventKind, Feedback, OperatorCommand, Outcome, OutcomeCounts, Readout
from bcirig.processing import Pipeline, RoiSet
from bcirig.recording import SessionFile
from bcirig.recording.integrity import open_session
from bcirig.schema import ConfigError


class ReplayLevel(enum.StrEnum):
    """What a replay starts from: the recorded frames, or (none recorded) the recorded F and neuropil."""

    FRAMES = "frames"
    TRACES = "traces"


# Every column a decision came from, in the order the data passes them.
READOUT_COLUMNS = ("valid", "shift", "corr", "F", "neuropil", "F0", "dff", "readout_raw", "readout")
TRACE_INPUTS = ("F", "neuropil")  # what a traces-level replay takes from the recording
FEEDBACK_COLUMNS = ("phase", "state", "trial", "trial_frame", "screen", "angle_deg", "sound", "tone_hz", "reward",
                    "opto", "readout_norm", "threshold", "lickport_mm", "lickport_speed_mm_s")
DECISION_COLUMNS = ("phase", "state", "trial", "screen", "angle_deg", "reward")  # shown in a mismatch line
COMMAND_COLUMNS = ("frame", "command_id", "action", "reward_ul", "opto_ms", "open_ms")
TRIAL_COLUMNS = ("trial", "start_frame", "outcome", "outcome_frame", "frames", "reward_frame", "phase", "catch")
FIXED_BY_RECORDING = ("imaging", "rois", "simulation", "setup")  # tables a replay cannot change

WHAT_IF_CANNOT_KNOW = (
    "What a what-if cannot know: from the first frame decided differently on, the mouse would have seen "
    "other feedback and had other rewards, and its brain activity - the recorded frames - would have "
    "followed what it saw. These are the decisions the changed protocol makes on the activity as recorded, "
    "not what the mouse would have done."
)


# ------------------------------------------------------------------------------------------- recording
@dataclass
class Recorded:
    """The parts of a session file a replay needs, read once."""

    path: str
    protocol_text: str
    carried: dict[str, Any]
    rois: dict[str, np.ndarray]
    reference: np.ndarray
    readout: dict[str, np.ndarray]
    feedback: dict[str, np.ndarray]
    commands: dict[str, np.ndarray]
    trials: dict[str, np.ndarray]
    calibration_windows: dict[str, np.ndarray]
    events: list[dict[str, Any]]
    has_frames: bool
    frame_rate_hz: float

    @property
    def safe_stop(self) -> tuple[int, str] | None:
        """(frame, reason) of the task's safe-state event, if the session ended in it."""
        ev = next((e for e in self.events if e["name"] == "safe_state"), None)
        return (int(ev["frame"]), str(ev["data"].get("reason", ""))) if ev else None

    @property
    def calibration(self) -> dict[str, Any]:
        """The recorded calibration event's numbers ({} if the session never calibrated)."""
        return next((e["data"] for e in self.events if e["name"] == "calibration"), {})


def carried_state(attrs: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """What yesterday's task handed this session: the file's ``carried`` attribute, or (files written
    without it, e.g. by ``bcirig simulate``) what the calibration event says it was given."""
    raw = attrs.get("carried")
    if raw is not None:
        return dict(json.loads(str(raw) or "{}") or {})
    cal: dict[str, Any] = next((e["data"] for e in events if e["name"] == "calibration"), {})
    z = cal.get("carried_z")
    carried: dict[str, Any] = {}
    if isinstance(z, int | float) and math.isfinite(z):
        carried["threshold_z"] = float(z)
    if cal.get("previous_z"):
        carried["daily_z"] = [float(v) for v in cal["previous_z"]]
    return carried


def _read(sf: SessionFile, path: str) -> Recorded:
    text = sf.protocol_text
    try:
        rate = float(tomllib.loads(text).get("imaging", {}).get("frame_rate_hz", 30.0))
    except (tomllib.TOMLDecodeError, TypeError, ValueError):
        rate = 30.0
    events = sf.events()
    return Recorded(
        path=path, protocol_text=text, carried=carried_state(sf.attrs, events),
        rois=sf.rois(), reference=sf.reference(), readout=sf.table("readout"), feedback=sf.table("feedback"),
        commands=sf.table("commands"), trials=sf.table("trials"),
        calibration_windows=sf.table("calibration_windows"), events=events, has_frames=sf.has_frames,
        frame_rate_hz=rate,
    )


# ------------------------------------------------------------------------------------------- running
@dataclass
class Run:
    """What the stages decided on the recorded frames."""

    readouts: list[Readout] = field(default_factory=list)
    feedback: list[Feedback] = field(default_factory=list)  # one per replayed frame, in order
    safe_feedback: Feedback | None = None  # the safe stop, applied after its frame
    commands: list[Any] = field(default_factory=list)
    task: Task | None = None
    pipeline: Pipeline | None = None
    frames: int = 0
    seconds: float = 0.0
    level: ReplayLevel = ReplayLevel.FRAMES


def _run(sf: SessionFile, rec: Recorded, protocol: Protocol, progress: TextIO | None, chunk: int = 256,
         stop_when_done: bool = False) -> Run:
    """Recorded frames (or, without frames, recorded F and neuropil) through a Pipeline and a Task."""
    run = Run(level=ReplayLevel.FRAMES if rec.has_frames else ReplayLevel.TRACES)
    run.pipeline = pipeline = Pipeline(protocol, RoiSet.from_arrays(rec.rois), rec.reference)
    run.task = task = Task(protocol, carried=rec.carried or None)
    ro_row = {int(f): i for i, f in enumerate(rec.readout["frame"])}
    safe = rec.safe_stop
    if safe is not None and safe[0] < 0:  # safe before the first frame
        run.safe_feedback = task.safe(safe[0], safe[1]).feedback

    operator: dict[int, list[dict[str, Any]]] = {}  # the experimenter's commands, by the frame the task applied them
    for e in rec.events:
        if e["name"] == EventKind.OPERATOR.value:
            operator.setdefault(int(e["frame"]), []).append(e["data"])

    def step(fi: int, readout: Readout) -> None:
        for d in operator.get(fi, ()):
            task.operate(OperatorCommand(d["command"]), int(d.get("command_id", 0)), float(d.get("value", 0.0)))
        out: TaskStep = task.step(readout)
        run.readouts.append(readout)
        run.feedback.append(out.feedback)
        run.commands.extend(out.commands)
        run.frames += 1
        if safe is not None and fi == safe[0]:
            run.safe_feedback = task.safe(fi, safe[1]).feedback

    t0 = time.perf_counter()
    next_print = t0 + 1.0
    if rec.has_frames:
        index = sf.frame_index()[:, 0]
        frames = sf.frames()
        total = len(index)
        for start in range(0, total, chunk):
            for j, data in enumerate(frames[start:start + chunk]):
                fi = int(index[start + j])
                if fi not in ro_row:  # a recorded frame the live pipeline never reported (end of session)
                    continue
                step(fi, pipeline.process(data, fi))
                if stop_when_done and task.done:
                    break
            if stop_when_done and task.done:
                break
            next_print = _progress(progress, run.frames, total, next_print)
    else:
        total = len(rec.readout["frame"])
        F, npl = rec.readout["F"], rec.readout["neuropil"]
        for r, fi in enumerate(rec.readout["frame"]):
            step(int(fi), pipeline.process_traces(F[r], npl[r], int(fi)))
            if stop_when_done and task.done:
                break
            if r % chunk == 0:
                next_print = _progress(progress, run.frames, total, next_print)
    run.seconds = time.perf_counter() - t0
    return run


def _progress(progress: TextIO | None, done: int, total: int, next_print: float) -> float:
    if progress is None or time.perf_counter() < next_print:
        return next_print
    progress.write(f"  replayed {done}/{total} frames\n")
    progress.flush()
    return time.perf_counter() + 1.0


# ------------------------------------------------------------------------------------------- identity
@dataclass
class ReplayReport:
    """What an identity replay found."""

    path: str
    frames: int = 0
    level: ReplayLevel = ReplayLevel.FRAMES
    readouts_compared: int = 0
    readout_mismatches: int = 0  # frames on which any readout column differs
    decisions_compared: int = 0
    decision_mismatches: int = 0  # feedback rows on which any feedback column differs
    commands_recorded: int = 0
    commands_replayed: int = 0
    commands_identical: bool = True
    calibration_identical: bool = True
    trials_recorded: int = 0
    trials_replayed: int = 0
    trial_table_identical: bool = False
    safe_stop: str = ""  # "frame N: reason" when the session ended in the safe state
    safe_stop_identical: bool = True
    column_mismatches: dict[str, int] = field(default_factory=dict)  # table.column -> rows that differ
    first_mismatch: str = ""
    seconds: float = 0.0
    mismatches: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """True only when every compared column of every table matches."""
        return (self.readout_mismatches == 0 and self.decision_mismatches == 0 and self.trial_table_identical
                and self.commands_identical and self.calibration_identical and self.safe_stop_identical
                and self.readouts_compared > 0)

    @property
    def frames_per_s(self) -> float:
        """Replay speed."""
        return self.frames / self.seconds if self.seconds > 0 else float("nan")

    def text(self) -> str:
        """Human-readable verdict."""
        verdict = "IDENTICAL" if self.identical else "DIFFERENT"
        source = "frames" if self.level == ReplayLevel.FRAMES else "recorded F and neuropil (no frames were recorded)"
        lines = [
            f"Replay of {self.path}: {verdict}",
            f"  frames replayed {self.frames} from {source} at {self.frames_per_s:,.0f} frames/s",
            f"  readouts compared {self.readouts_compared} (valid, shift, corr, F, neuropil, F0, dF/F, readout_raw, "
            f"readout), mismatches {self.readout_mismatches}",
            f"  decisions compared {self.decisions_compared} (every feedback column), mismatches "
            f"{self.decision_mismatches}",
            f"  commands recorded {self.commands_recorded}, replayed {self.commands_replayed}, "
            f"{'identical' if self.commands_identical else 'DIFFERENT'}; calibration "
            f"{'identical' if self.calibration_identical else 'DIFFERENT'}",
            f"  trials recorded {self.trials_recorded}, replayed {self.trials_replayed}, "
            f"table {'identical' if self.trial_table_identical else 'DIFFERENT'}",
        ]
        if self.safe_stop:
            lines.append(f"  ended in the safe state at {self.safe_stop} (a recorded event, replayed "
                         f"{'as recorded' if self.safe_stop_identical else 'DIFFERENTLY'})")
        differing = {k: v for k, v in self.column_mismatches.items() if v}
        if differing:
            lines.append("  columns that differ: " + ", ".join(f"{k} ({v} rows)" for k, v in differing.items()))
        if self.first_mismatch:
            lines.append(f"  first mismatch: {self.first_mismatch}")
        return "\n".join(lines)


def _cells_equal(mine: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """Per row: every element bit-identical in the recorded dtype, NaN equal to NaN."""
    mine = np.asarray(mine)
    theirs = np.asarray(theirs)
    if mine.shape != theirs.shape:
        return np.zeros(len(theirs), bool)
    if theirs.dtype.kind == "f":
        mine = mine.astype(theirs.dtype)
        same = (mine == theirs) | (np.isnan(mine) & np.isnan(theirs))
        # == treats -0.0 and 0.0 as equal; the bits must match too
        same &= np.signbit(mine) == np.signbit(theirs)
    else:
        same = mine == theirs
    rows: np.ndarray = same.reshape(len(theirs), -1).all(axis=1) if same.ndim > 1 else same
    return rows


def _readout_column(readouts: list[Readout], name: str) -> np.ndarray:
    if name == "shift":
        return np.array([np.asarray(r.shift, np.float32).reshape(2) for r in readouts]).reshape(len(readouts), 2)
    values = [getattr(r, name) for r in readouts]
    if name in ("F", "neuropil", "F0", "dff"):
        return np.array([np.asarray(v, np.float32) for v in values])
    return np.array(values)


def _feedback_column(feedback: list[Feedback], name: str) -> np.ndarray:
    values = [getattr(fb, name) for fb in feedback]
    if values and hasattr(values[0], "value"):  # enums are recorded as their byte strings
        return np.array([v.value.encode() for v in values], dtype="S32")
    return np.array(values)


def _note(rep: ReplayReport, text: str) -> None:
    if not rep.first_mismatch:
        rep.first_mismatch = text
    if len(rep.mismatches) < 20:
        rep.mismatches.append(text)


def _compare_rows(rep: ReplayReport, table: str, columns: tuple[str, ...], mine: dict[str, np.ndarray],
                  theirs: dict[str, np.ndarray], frames: np.ndarray) -> np.ndarray:
    """Mark every row on which any of ``columns`` differs; count per column; returns the row mask."""
    bad = np.zeros(len(frames), bool)
    for col in columns:
        if col not in theirs:
            continue
        diff = ~_cells_equal(mine[col], theirs[col])
        rep.column_mismatches[f"{table}.{col}"] = int(diff.sum())
        if diff.any():
            r = int(np.argmax(diff))
            _note(rep, f"{table}.{col} at frame {int(frames[r])}: replayed {_show(mine[col][r])} != recorded "
                       f"{_show(theirs[col][r])}")
        bad |= diff
    return bad


def _show(v: Any) -> str:
    arr = np.asarray(v)
    if arr.dtype.kind == "S":
        return repr(arr.item().decode())
    return np.array2string(arr, precision=17, threshold=12) if arr.ndim else repr(arr.item())


def _trial_rows(task: Task) -> dict[str, np.ndarray]:
    done = [t for t in task.trials if t.outcome is not None]
    return {
        "trial": np.array([t.trial for t in done], np.int32),
        "start_frame": np.array([t.start_frame for t in done], np.int64),
        "outcome": np.array([t.outcome.value.encode() for t in done if t.outcome is not None], "S32"),
        "outcome_frame": np.array([t.outcome_frame for t in done], np.int64),
        "frames": np.array([t.frames_to_outcome for t in done], np.int64),
        "reward_frame": np.array([t.reward_frame for t in done], np.int64),
        "phase": np.array([t.phase.value.encode() for t in done], "S32"),
        "catch": np.array([t.catch for t in done], bool),
    }


def compare(rec: Recorded, run: Run) -> ReplayReport:
    """Every compared column of the replayed run against the recording."""
    rep = ReplayReport(path=rec.path, frames=run.frames, level=run.level, seconds=run.seconds)
    # readouts: one per replayed frame, aligned with the recorded rows by frame number
    ro = rec.readout
    row_of = {int(f): i for i, f in enumerate(ro["frame"])}
    rows = np.array([row_of[r.frame] for r in run.readouts], np.intp)
    frames = ro["frame"][rows]
    theirs = {c: ro[c][rows] for c in READOUT_COLUMNS if c in ro}
    mine = {c: _readout_column(run.readouts, c) for c in READOUT_COLUMNS}
    columns = READOUT_COLUMNS if run.level == ReplayLevel.FRAMES else tuple(c for c in READOUT_COLUMNS
                                                                  if c not in (*TRACE_INPUTS, "shift", "corr"))
    rep.readouts_compared = len(rows)
    rep.readout_mismatches = int(_compare_rows(rep, "readout", columns, mine, theirs, frames).sum())
    missing = len(ro["frame"]) - len(rows)
    if missing:
        rep.readout_mismatches += missing
        _note(rep, f"{missing} recorded readouts have no recorded frame to replay")
    # feedback: the safe stop's row(s) carry the last frame's number and are compared with the replayed
    # safe stop; every other row with the replayed decision on its frame
    fb = rec.feedback
    safe = rec.safe_stop
    phases = fb["phase"]
    is_safe_row = np.zeros(len(fb["frame"]), bool)
    if safe is not None:
        rep.safe_stop = f"frame {safe[0]}: {safe[1]}"
        is_safe_row = (fb["frame"] == safe[0]) & (phases == b"safe")
        normal_at_stop = (fb["frame"] == safe[0]) & ~is_safe_row
        if normal_at_stop.sum() == 0 and is_safe_row.sum() > 0 and safe[0] >= 0:
            is_safe_row[np.flatnonzero(is_safe_row)[0]] = False  # the frame was decided in the safe state already
    mine_by_frame = {f.frame: f for f in run.feedback}
    normal = np.flatnonzero(~is_safe_row)
    matched = [i for i in normal if int(fb["frame"][i]) in mine_by_frame]
    unmatched = len(normal) - len(matched)
    idx = np.array(matched, np.intp)
    mine_fb = [mine_by_frame[int(fb["frame"][i])] for i in matched]
    theirs_fb = {c: fb[c][idx] for c in FEEDBACK_COLUMNS if c in fb}  # older files lack the newer columns
    mine_cols = {c: _feedback_column(mine_fb, c) for c in FEEDBACK_COLUMNS}
    rep.decisions_compared = len(matched)
    rep.decision_mismatches = int(_compare_rows(rep, "feedback", FEEDBACK_COLUMNS, mine_cols, theirs_fb,
                                                fb["frame"][idx]).sum())
    if unmatched:
        rep.decision_mismatches += unmatched
        _note(rep, f"{unmatched} recorded decisions were on frames the replay did not reach")
    if safe is not None:
        safe_rows = np.flatnonzero(is_safe_row)
        if run.safe_feedback is None or not len(safe_rows):
            rep.safe_stop_identical = not len(safe_rows) and run.safe_feedback is None
        else:
            mine_safe = {c: _feedback_column([run.safe_feedback] * len(safe_rows), c) for c in FEEDBACK_COLUMNS}
            theirs_safe = {c: fb[c][safe_rows] for c in FEEDBACK_COLUMNS if c in fb}
            bad = _compare_rows(rep, "feedback(safe stop)", FEEDBACK_COLUMNS, mine_safe, theirs_safe,
                                fb["frame"][safe_rows])
            rep.safe_stop_identical = not bad.any()
        rep.decisions_compared += len(safe_rows)
    # commands
    cm = rec.commands
    rep.commands_recorded, rep.commands_replayed = len(cm["frame"]), len(run.commands)
    if rep.commands_recorded != rep.commands_replayed:
        rep.commands_identical = False
        _note(rep, f"commands: replayed {rep.commands_replayed}, recorded {rep.commands_recorded}")
    else:
        mine_cm = {
            "frame": np.array([c.frame for c in run.commands], np.int64),
            "command_id": np.array([c.command_id for c in run.commands], np.int64),
            "action": np.array([c.action.value.encode() for c in run.commands], "S32"),
            "reward_ul": np.array([c.reward_ul for c in run.commands], np.float64),
            "opto_ms": np.array([c.opto_ms for c in run.commands], np.float64),
            "open_ms": np.array([c.open_ms for c in run.commands], np.float64),
        }
        rep.commands_identical = not _compare_rows(rep, "commands", COMMAND_COLUMNS, mine_cm, cm, cm["frame"]).any()
    # calibration windows (the resampled starts and their maxima)
    assert run.task is not None
    cal, rec_cal = run.task.calibration, rec.calibration_windows
    if cal is not None or len(rec_cal.get("start", ())):
        same = (cal is not None and len(rec_cal["start"]) == len(cal.window_starts)
                and np.array_equal(rec_cal["start"], cal.window_starts)
                and bool(_cells_equal(cal.window_maxima, rec_cal["maximum"]).all()))
        rep.calibration_identical = bool(same)
        if not same:
            _note(rep, "calibration windows differ")
    # trial table
    tr = rec.trials
    rep.trials_recorded = len(tr["trial"])
    mine_tr = _trial_rows(run.task)
    rep.trials_replayed = len(mine_tr["trial"])
    if rep.trials_recorded != rep.trials_replayed:
        rep.trial_table_identical = False
        _note(rep, f"trial table: replayed {rep.trials_replayed} trials, recorded {rep.trials_recorded}")
    else:
        rep.trial_table_identical = not _compare_rows(rep, "trials", TRIAL_COLUMNS, mine_tr, tr, tr["trial"]).any()
    return rep


def replay(path: str | Path, progress: TextIO | None = None, chunk: int = 256) -> ReplayReport:
    """Replay a session file and compare; raises SessionFileError if it cannot be replayed."""
    with open_session(path) as sf:
        rec = _read(sf, str(path))
        protocol = parse_protocol(rec.protocol_text, f"{path} (protocol attribute)")
        run = _run(sf, rec, protocol, progress, chunk)
    return compare(rec, run)


# ------------------------------------------------------------------------------------------- what-if
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def toml_text(table: dict[str, Any]) -> str:
    """A TOML document for a parsed protocol table (scalars first, then each sub-table under its header)."""
    lines: list[str] = []

    def emit(t: dict[str, Any], prefix: tuple[str, ...]) -> None:
        scalars = {k: v for k, v in t.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in t.items() if isinstance(v, dict)}
        if prefix and (scalars or not tables):
            lines.append("[" + ".".join(_toml_key(p) for p in prefix) + "]")
        lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in scalars.items())
        if scalars:
            lines.append("")
        for k, v in tables.items():
            emit(v, (*prefix, k))

    emit(table, ())
    return "\n".join(lines).rstrip() + "\n"


def _parse_value(text: str) -> Any:
    """A --set value as TOML (3, 0.5, true, "x", [1, 2], { a = 1 }); anything else is a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_changes(
    protocol_text: str, changes: list[str], file: str
) -> tuple[Protocol, str, list[tuple[str, Any, Any]]]:
    """The recorded protocol with ``KEY=VALUE`` changes, validated by parse_protocol; raises ConfigError.

    Returns the changed protocol, its TOML text, and (key, recorded value, new value) per change.
    """
    table = tomllib.loads(protocol_text)
    recorded = parse_protocol(protocol_text, file)
    done: list[tuple[str, Any, Any]] = []
    for change in changes:
        key, sep, raw = change.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(file, "--set", change, "KEY=VALUE, e.g. calibration.fixed_threshold=0.3")
        parts = key.split(".")
        value = _parse_value(raw.strip())
        if parts[0] in FIXED_BY_RECORDING:
            raise ConfigError(file, key, value, f"a key outside [{'], ['.join(FIXED_BY_RECORDING)}]: the frames and "
                                              "ROIs are as recorded (change readout.decoder.* to decode other ROIs)")
        node = table
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(file, ".".join(parts[:i + 1]), child, "a table (it is a value in this protocol)")
            node = child
        done.append((key, _recorded_value(recorded, parts), value))
        node[parts[-1]] = value
    text = toml_text(table)
    return parse_protocol(text, file), text, done


def _recorded_value(protocol: Protocol, parts: list[str]) -> Any:
    """The value the recording ran with (the default where the file left it out); None if there is none."""
    node: Any = protocol
    for part in parts:
        node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
        if node is None:
            return None
    return node.value if hasattr(node, "value") else node


@dataclass
class TrialOutcome:
    """One trial as recorded or as the what-if decides it."""

    trial: int
    start_frame: int
    outcome: str  # hit, abort, timeout, or '' (no outcome before the recording ended)
    frames: int  # trial start to outcome, inclusive (-1 without outcome)

    def time_to_hit_s(self, rate: float) -> float:
        """Seconds from trial start to the hit (NaN unless a hit)."""
        return self.frames / rate if self.outcome == "hit" else float("nan")


def _totals(trials: list[TrialOutcome], rate: float) -> dict[str, Any]:
    hits = [t.time_to_hit_s(rate) for t in trials if t.outcome == Outcome.HIT]
    return {**OutcomeCounts.of(t.outcome for t in trials).as_dict(),
            "median_time_to_hit_s": float(np.median(hits)) if hits else float("nan")}


@dataclass
class WhatIfReport:
    """The recording's decisions beside the changed protocol's, trial by trial and in total."""

    path: str
    changes: list[tuple[str, Any, Any]]
    protocol_text: str
    frame_rate_hz: float
    recorded: list[TrialOutcome]
    what_if: list[TrialOutcome]
    threshold_recorded: float
    threshold_what_if: float
    achieved_recorded: float
    achieved_what_if: float
    target_fraction: float
    frames: int
    frames_decided_differently: int
    first_different_frame: int  # -1 when every decision is the same
    rewards_recorded: int
    rewards_what_if: int
    level: ReplayLevel = ReplayLevel.FRAMES

    @property
    def totals(self) -> dict[str, dict[str, Any]]:
        """Hits, aborts, timeouts, hit rate, median time to hit: recorded and what-if."""
        return {"recorded": _totals(self.recorded, self.frame_rate_hz),
                "what_if": _totals(self.what_if, self.frame_rate_hz)}

    def to_dict(self) -> dict[str, Any]:
        """Everything in the report, for JSON."""
        def rows(ts: list[TrialOutcome]) -> list[dict[str, Any]]:
            return [{"trial": t.trial, "start_frame": t.start_frame, "outcome": t.outcome, "frames": t.frames,
                     "time_to_hit_s": t.time_to_hit_s(self.frame_rate_hz)} for t in ts]

        return {
            "session": self.path, "changes": [{"key": k, "recorded": a, "what_if": b} for k, a, b in self.changes],
            "level": self.level, "frames": self.frames, "frame_rate_hz": self.frame_rate_hz,
            "threshold": {"recorded": self.threshold_recorded, "what_if": self.threshold_what_if},
            "achieved_window_fraction": {"recorded": self.achieved_recorded, "what_if": self.achieved_what_if,
                                         "target": self.target_fraction},
            "frames_decided_differently": self.frames_decided_differently,
            "first_different_frame": self.first_different_frame,
            "rewards": {"recorded": self.rewards_recorded, "what_if": self.rewards_what_if},
            "totals": self.totals, "trials": {"recorded": rows(self.recorded), "what_if": rows(self.what_if)},
            "cannot_know": WHAT_IF_CANNOT_KNOW, "protocol": self.protocol_text,
        }

    def text(self) -> str:
        """The side-by-side report."""
        rate = self.frame_rate_hz

        def cell(t: TrialOutcome | None) -> str:
            if t is None:
                return "-"
            if not t.outcome:
                return f"(recording ended)   from frame {t.start_frame}"
            tth = f"{t.time_to_hit_s(rate):6.2f} s" if t.outcome == "hit" else ""
            return f"{t.outcome:8s}{tth:>9s}   from frame {t.start_frame}"

        changed = ", ".join(f"{k}: {_plain(a)} -> {_plain(b)}" for k, a, b in self.changes)
        lines = [f"What-if replay of {self.path}", f"  changed: {changed}",
                 f"  threshold (readout above the baseline minimum): recorded {self.threshold_recorded:.4f}, "
                 f"what-if {self.threshold_what_if:.4f}",
                 f"  baseline windows reaching it: recorded {_pct(self.achieved_recorded)}, what-if "
                 f"{_pct(self.achieved_what_if)} (target {_pct(self.target_fraction)})", "",
                 f"  {'trial':>5s}  {'recorded: outcome, time to hit, start':38s}  what-if"]
        n = max(len(self.recorded), len(self.what_if))
        for i in range(n):
            a = self.recorded[i] if i < len(self.recorded) else None
            b = self.what_if[i] if i < len(self.what_if) else None
            mark = "" if (a and b and a.outcome == b.outcome and a.frames == b.frames) else "  *"
            lines.append(f"  {i + 1:5d}  {cell(a):38s}  {cell(b)}{mark}")
        tot = self.totals
        for label, key in (("recorded", "recorded"), ("what-if", "what_if")):
            t = tot[key]
            lines.append(f"  {label:>8s}: trials {t['trials']}  hits {t['hits']}  aborts {t['aborts']}  "
                         f"timeouts {t['timeouts']}  hit rate {_pct(t['hit_rate'])}  median time to hit "
                         f"{_num(t['median_time_to_hit_s'], '.2f')} s")
        lines.append(f"  rewards: recorded {self.rewards_recorded}, what-if {self.rewards_what_if}")
        if self.first_different_frame < 0:
            lines.append(f"  every one of {self.frames} frames is decided as recorded")
        else:
            lines.append(f"  decisions differ on {self.frames_decided_differently} of {self.frames} frames, first on "
                         f"frame {self.first_different_frame}  (* = trial decided differently)")
        lines += ["", *textwrap.wrap(WHAT_IF_CANNOT_KNOW, 104, initial_indent="  ", subsequent_indent="  ")]
        return "\n".join(lines)


def _plain(v: Any) -> str:
    return "(absent)" if v is None else json.dumps(v) if isinstance(v, dict | list | str) else str(v)


def _pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.1%}"


def _num(x: float, spec: str) -> str:
    return "n/a" if not math.isfinite(x) else format(x, spec)


def what_if(path: str | Path, changes: list[str], progress: TextIO | None = None) -> WhatIfReport:
    """Replay a session through its protocol changed by ``KEY=VALUE`` items; raises ConfigError on a bad one."""
    with open_session(path) as sf:
        rec = _read(sf, str(path))
        label = f"{path} (protocol with --set)"
        protocol, text, done = apply_changes(rec.protocol_text, changes, label)
        if not rec.has_frames:
            reg = [(k, b) for k, _a, b in done if k.split(".")[0] == "registration"]
            if reg:
                raise ConfigError(label, reg[0][0], reg[0][1], "no registration.* change: this session was "
                                  "recorded without frames, so it is replayed from its recorded F and neuropil")
        run = _run(sf, rec, protocol, progress, stop_when_done=True)
    assert run.task is not None
    fb = rec.feedback
    recorded_rows = {int(f): i for i, f in enumerate(fb["frame"]) if fb["phase"][i] != b"safe"
                     or not (rec.safe_stop and int(f) == rec.safe_stop[0])}
    differ, first = 0, -1
    for mine in run.feedback:
        r = recorded_rows.get(mine.frame)
        if r is None:
            continue
        theirs = tuple(fb[c][r] for c in DECISION_COLUMNS)
        ours = tuple(_feedback_column([mine], c)[0] for c in DECISION_COLUMNS)
        if not all(bool(_cells_equal(np.array([o]), np.array([t]))[0]) for o, t in zip(ours, theirs, strict=True)):
            differ += 1
            first = mine.frame if first < 0 else first
    tr = rec.trials
    recorded = [TrialOutcome(int(t), int(s), o.decode(), int(n))
                for t, s, o, n in zip(tr["trial"], tr["start_frame"], tr["outcome"], tr["frames"], strict=True)]
    replayed = [TrialOutcome(t.trial, t.start_frame, t.outcome.value if t.outcome else "", t.frames_to_outcome)
                for t in run.task.trials]
    cal = run.task.calibration
    rec_cal = rec.calibration
    return WhatIfReport(
        path=str(path), changes=done, protocol_text=text, frame_rate_hz=protocol.imaging.frame_rate_hz,
        recorded=recorded, what_if=replayed,
        threshold_recorded=float(rec_cal.get("threshold", float("nan"))),
        threshold_what_if=cal.threshold if cal else float("nan"),
        achieved_recorded=float(rec_cal.get("achieved_fraction", float("nan"))),
        achieved_what_if=cal.achieved_fraction if cal else float("nan"),
        target_fraction=protocol.calibration.target_hit_fraction,
        frames=run.frames, frames_decided_differently=differ, first_different_frame=first,
        rewards_recorded=int(np.sum(fb["reward"])), rewards_what_if=sum(bool(f.reward) for f in run.feedback),
        level=run.level,
    )


def main(path: str, changes: list[str] | None = None, json_out: str | None = None) -> int:
    """``bcirig replay``: identity (exit 0 only if identical) or, with changes, the what-if report (exit 0)."""
    if changes:
        rep = what_if(path, changes, progress=sys.stderr)
        print(rep.text())
        if json_out:
            Path(json_out).write_text(json.dumps(rep.to_dict(), indent=1, allow_nan=True))
            print(f"\n  numbers: {json_out}")
        return 0
    ident = replay(path, progress=sys.stderr)
    print(ident.text())
    if json_out:
        Path(json_out).write_text(json.dumps({"identical": ident.identical, "report": ident.text(),
                                              "column_mismatches": ident.column_mismatches}, indent=1))
    return 0 if ident.identical else 1


__all__ = ["ReplayReport", "WhatIfReport", "apply_changes", "compare", "main", "replay", "toml_text", "what_if"]
