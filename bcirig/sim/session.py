"""One simulated day, inline: mouse -> pipeline -> task, the same stages as the live rig.

At the pixels level the loop is :func:`bcirig.compose.run_inline`'s order (frames through the real
pipeline); at the traces level the mouse hands ROI F and neuropil to ``Pipeline.process_traces``.
Either way the task's feedback on frame t is what the mouse senses before rendering frame t+1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bcirig.config import Protocol
from bcirig.messages import Feedback, Frame, Phase, Readout
from bcirig.sim.brain import MouseState
from bcirig.sim.config import SimConfig
from bcirig.sim.mouse import SimulatedMouse

_NO_PIXELS = np.zeros(0, np.uint16)


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

    ``make_writer(mouse)`` may return a session writer (``write(msg)``, ``close(summary)``); every frame's
    readout, feedback, commands, events and ground truth go to it, and it is closed at the end of the day.
    """
    from bcirig.control.task import Task
    from bcirig.processing.pipeline import Pipeline

    mouse = SimulatedMouse(protocol, config, seed, state)
    writer = make_writer(mouse) if make_writer is not None else None
    rois = mouse.rois()
    pipeline = Pipeline(protocol, rois, mouse.reference_image())
    task = Task(protocol, carried=carried)
    pixels = config.level == "pixels"
    cols: dict[str, list[Any]] = {k: [] for k in ("readout", "angle", "reward", "licks", "phase", "rpe")}
    dff_rows: list[np.ndarray] = []
    rates_rows: list[np.ndarray] = []
    spikes_rows: list[np.ndarray] = []
    shift_rows: list[Any] = []
    feedback: Feedback | None = None
    index = 0
    calibration: dict[str, Any] = {}
    t0 = time.perf_counter()
    while not task.done:
        readout: Readout
        if pixels:
            sim = mouse.step(feedback)
            readout = pipeline.process(sim.data, index)
            truth = sim.truth
        else:
            tf = mouse.step_traces(feedback)
            readout = pipeline.process_traces(tf.F, tf.neuropil, index)
            truth = tf.truth
        step = task.step(readout)
        feedback = step.feedback
        if writer is not None:
            data = sim.data if pixels else _NO_PIXELS
            writer.write(Frame(frame=index, data=data, truth=truth))
            writer.write(readout)
            for cmd in step.commands:
                writer.write(cmd)
            writer.write(feedback)
            for ev in step.events:
                writer.write(ev)
        for ev in step.events:
            if ev.name.value == "calibration":
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
        index += 1
    elapsed = time.perf_counter() - t0
    if writer is not None:
        writer.close(summary=dict(task.summary()))
    new_state = mouse.finish_day()
    summary = dict(task.summary())
    summary.update(frames=index, seconds=elapsed, frames_per_s=index / elapsed if elapsed > 0 else float("nan"),
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
            "licks": np.asarray(cols["licks"], np.int16),
            "closed_loop": np.asarray(cols["phase"], bool),
            "rpe": np.asarray(cols["rpe"], np.float64),
            "dff": np.asarray(dff_rows, np.float32),
            "true_rates_hz": np.asarray(rates_rows, np.float32),
            "true_spikes": np.asarray(spikes_rows, np.int16),
            "true_shift": np.asarray(shift_rows, np.int16),
        }
    return DayResult(summary, new_state, task.carry_forward(), calibration, trials, arrays)
