"""One simulated day, inline: mouse -> pipeline -> task, the same stages as the live rig.

The loop is :func:`bcirig.compose.run_inline` (frames through the real pipeline at the pixels level; ROI
F and neuropil into ``Pipeline.process_traces`` at the traces level); this module adds the day's
bookkeeping. Either way the task's feedback on frame t is what the mouse senses before frame t+1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bcirig.compose import run_inline
from bcirig.config import Protocol
from bcirig.interfaces import TaskStep
from bcirig.messages import EventKind, Phase, Readout
from bcirig.recording.layout import TRUTH_DTYPES
from bcirig.sim.brain import MouseState
from bcirig.sim.config import SimConfig, SimLevel
from bcirig.sim.mouse import SimulatedMouse
from bcirig.summary import session_summary


@dataclass
class DayResult:
    """What one simulated day produced (summary numbers plus per-frame arrays for the session file)."""

    summary: dict[str, Any]
    state: MouseState
    carried: dict[str, Any]
    calibration: dict[str, Any]
    trials: list[dict[str, Any]]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def run_day(
    protocol: Protocol,
    config: SimConfig,
    seed: int,
    state: MouseState | None = None,
    carried: dict[str, Any] | None = None,
    *,
    make_writer: Any = None,
    keep_arrays: bool = True,
    on_frame: Any = None,
) -> DayResult:
    """Baseline, calibration and trials of one day; returns the results and tomorrow's state.

    ``make_writer(mouse)`` may return a session writer (``write(msg)``, ``close(summarize=...)``); every frame's
    readout, feedback, commands, events and ground truth go to it, and it is closed at the end of the day.
    """
    from bcirig.control.task import Task
    from bcirig.processing.pipeline import Pipeline

    mouse = SimulatedMouse(protocol, config, seed, state)
    writer = make_writer(mouse) if make_writer is not None else None
    rois = mouse.rois()
    pipeline = Pipeline(protocol, rois, mouse.reference_image())
    task = Task(protocol, carried=carried)
    cols: dict[str, list[Any]] = {k: [] for k in ("readout", "angle", "reward", "licks", "phase", "rpe")}
    dff_rows: list[np.ndarray] = []
    rates_rows: list[np.ndarray] = []
    spikes_rows: list[np.ndarray] = []
    shift_rows: list[Any] = []
    calibration: dict[str, Any] = {}

    def collect(index: int, readout: Readout, step: TaskStep, truth: dict[str, Any]) -> None:
        nonlocal calibration
        feedback = step.feedback
        for ev in step.events:
            if ev.name is EventKind.CALIBRATION:
                calibration = {k: v for k, v in ev.data.items() if not isinstance(v, list)}
        if keep_arrays:
            cols["readout"].append(readout.readout)
            cols["angle"].append(feedback.angle_deg)
            cols["reward"].append(feedback.reward)
            cols["licks"].append(truth["licks"])
            cols["phase"].append(feedback.phase is Phase.CLOSED_LOOP)
            cols["rpe"].append(truth["rpe"])
            dff_rows.append(readout.dff)
            rates_rows.append(truth["rates"])
            spikes_rows.append(truth["spikes"])
            shift_rows.append(truth["shift"])
        if on_frame is not None:
            on_frame(index, feedback)

    run = run_inline(mouse, pipeline, task, writer=writer, on_frame=collect, traces=config.level != SimLevel.PIXELS)
    if writer is not None:
        writer.close(summarize=session_summary)  # the same summary a live session's recorder writes
    new_state = mouse.finish_day()
    summary = dict(task.summary())
    summary.update(frames=run["frames"], seconds=run["seconds"], frames_per_s=run["frames_per_s"],
                   threshold=calibration.get("threshold", float("nan")),
                   achieved_fraction=calibration.get("achieved_fraction", float("nan")))
    trials = [
        {"trial": t.trial, "start_frame": t.start_frame, "outcome": t.outcome.value if t.outcome else "",
         "frames": t.frames_to_outcome, "reward_frame": t.reward_frame}
        for t in task.trials
    ]
    arrays: dict[str, np.ndarray] = {}
    if keep_arrays:
        arrays = {
            "readout": np.asarray(cols["readout"], np.float64),
            "angle_deg": np.asarray(cols["angle"], np.float32),
            "reward": np.asarray(cols["reward"], bool),
            "licks": np.asarray(cols["licks"], TRUTH_DTYPES["licks"]),
            "closed_loop": np.asarray(cols["phase"], bool),
            "rpe": np.asarray(cols["rpe"], TRUTH_DTYPES["rpe"]),
            "dff": np.asarray(dff_rows, np.float32),
            "true_rates_hz": np.asarray(rates_rows, TRUTH_DTYPES["rates"]),
            "true_spikes": np.asarray(spikes_rows, TRUTH_DTYPES["spikes"]),
            "true_shift": np.asarray(shift_rows, TRUTH_DTYPES["shift"]),
        }
    return DayResult(summary, new_state, task.carry_forward(), calibration, trials, arrays)
