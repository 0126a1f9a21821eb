"""Inline composition: the same stages as the live rig, called in one loop in one process (no ZeroMQ).

Used by multi-day simulation (``bcirig simulate``, :mod:`bcirig.sim.session`) and by the test that holds
an inline run to the lockstep processes' decisions. The loop is the lockstep order exactly: the mouse
renders frame t having sensed the task's feedback on frame t-1, so an inline run and a lockstep
multi-process run of the same seed make the same decisions.

``bcirig replay`` (:mod:`bcirig.replay`) calls the same stages, frame by frame, but in its own loop:
its frames come from the file, not from a mouse that senses feedback, each under its recorded frame
number; the recorded operator commands and safe stop are applied on the frames they happened; and it
runs on past the task's end over every frame the session recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from bcirig.interfaces import MouseStage, PipelineStage, TaskStage, TaskStep
from bcirig.messages import Feedback, Frame, Readout

_NO_PIXELS = np.zeros(0, np.uint16)  # traces level: the Frame message carries only ground truth

OnFrame = Callable[[int, Readout, TaskStep, dict[str, Any]], None]


class TraceFrame(Protocol):
    """A traces-level frame: ROI F and neuropil (RoiSet order) and ground truth."""

    F: np.ndarray
    neuropil: np.ndarray
    truth: dict[str, Any]


@runtime_checkable
class TraceMouse(Protocol):
    """A simulated mouse that can skip the pixels: ROI traces per frame (``traces=True``)."""

    def step_traces(self, feedback: Feedback | None) -> TraceFrame:
        """The next frame's ROI F and neuropil, having sensed the task's feedback."""
        ...


@runtime_checkable
class TracePipeline(Protocol):
    """A pipeline that takes ROI F and neuropil instead of a frame (``traces=True``)."""

    def process_traces(self, F: np.ndarray, neuropil: np.ndarray, index: int) -> Readout:
        """The readout from F and neuropil onward."""
        ...


def run_inline(
    mouse: MouseStage,
    pipeline: PipelineStage,
    task: TaskStage,
    *,
    writer: Any = None,
    max_frames: int | None = None,
    on_frame: OnFrame | None = None,
    traces: bool = False,
) -> dict[str, Any]:
    """Run until the task is done (or ``max_frames``); returns the task's summary plus frame counts.

    ``traces=True`` runs the traces level: ``mouse.step_traces`` gives ROI F and neuropil, which go to
    ``pipeline.process_traces``. ``on_frame(index, readout, step, truth)`` sees every frame's results.
    """
    step_traces = mouse.step_traces if isinstance(mouse, TraceMouse) else None
    process_traces = pipeline.process_traces if isinstance(pipeline, TracePipeline) else None
    if traces and (step_traces is None or process_traces is None):
        raise TypeError("traces=True needs a mouse with step_traces and a pipeline with process_traces")
    feedback: Feedback | None = None
    index = 0
    t0 = time.perf_counter()
    while not task.done and (max_frames is None or index < max_frames):
        if traces:
            assert step_traces is not None and process_traces is not None  # checked above
            tf = step_traces(feedback)
            stamp = time.monotonic_ns()
            readout = process_traces(tf.F, tf.neuropil, index)
            data, truth = _NO_PIXELS, tf.truth
        else:
            sim = mouse.step(feedback)
            stamp = time.monotonic_ns()
            readout = pipeline.process(sim.data, index)
            data, truth = sim.data, sim.truth
        readout.t_ns = {"source": stamp, **readout.t_ns}
        step = task.step(readout)
        out = time.monotonic_ns()
        stamps = {"source": stamp, "arrive": readout.t_ns.get("arrive", stamp), "task_out": out}
        step.feedback.t_ns = dict(stamps)
        if writer is not None:
            writer.write(Frame(frame=index, data=data, truth=truth, t_ns={"source": stamp}))
            writer.write(readout)
            for cmd in step.commands:
                cmd.t_ns = dict(stamps)
                writer.write(cmd)
            writer.write(step.feedback)
            for ev in step.events:
                writer.write(ev)
        feedback = step.feedback
        if on_frame is not None:
            on_frame(index, readout, step, truth)
        index += 1
    elapsed = time.perf_counter() - t0
    summary: dict[str, Any] = dict(getattr(task, "summary", dict)())
    summary.update(frames=index, seconds=elapsed, frames_per_s=index / elapsed if elapsed > 0 else float("nan"))
    return summary
