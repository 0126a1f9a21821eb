"""The simulated microscope as a frame source: a :class:`~bcirig.sim.SimulatedMouse` behind the contract.

Paced: each :meth:`SimulatedSource.read` renders one volume, having sensed the newest feedback the node
passed to :meth:`sense` (in lockstep, the task's verdict on the previous frame). Its plane images come
out with the BCI plane last, as a microscope that scans the other planes first would send them, so the
assembler completes each volume from one time step of the mouse. Its licks come back through
:meth:`take_contacts` (the rig's lick sensor), never through the frames.

This module and ``bcirig.sim`` are the only places that know the mouse is simulated.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bcirig.acquisition.base import LickContact, RawFrame, SourceStats
from bcirig.config import Protocol, Rig
from bcirig.messages import Feedback
from bcirig.recording.layout import TRUTH_DTYPES

RECORDED_TRUTH = ("shift", "licks")  # what a live session's truth table keeps (bcirig.setup.DEFAULT_TRUTH_FIELDS)


def frame_truth(truth: dict[str, Any]) -> dict[str, Any]:
    """The recorded part of a simulated frame's ground truth, as a frame carries it: scalars as they are,
    vectors as numpy arrays of their column's dtype (they travel as buffers, never as JSON lists)."""
    return {k: truth[k] if np.ndim(truth[k]) == 0 else np.asarray(truth[k], TRUTH_DTYPES[k])
            for k in RECORDED_TRUTH if k in truth}


def make_mouse(protocol: Protocol, rig: Rig, state: Any = None, day: int = 1) -> Any:
    """The simulated mouse a simulated rig images, configured from the protocol's simulation table."""
    import dataclasses

    from bcirig.sim import SimLevel, SimulatedMouse, parse_sim_config

    config = parse_sim_config(protocol.simulation, protocol.source_path or "<protocol>")
    # A session renders frames for the real pipeline, whatever level the table sets for sweeps.
    config = dataclasses.replace(config, level=SimLevel.PIXELS)
    return SimulatedMouse(protocol, config, seed=rig.source.seed, state=state, day=day)


class SimulatedSource:
    """Frames rendered by a simulated mouse that senses the task's feedback (paced, closed loop)."""

    paced = True
    poll_interval_s = 0.1

    def __init__(self, protocol: Protocol, rig: Rig, mouse: Any = None, *, day: int = 1, skip: int = 0) -> None:
        self.mouse = mouse if mouse is not None else make_mouse(protocol, rig, day=day)
        self.protocol = protocol
        self.skip = skip  # volumes the set-up phase already saw: the session continues after them
        img = protocol.imaging
        self.order = [p for p in range(img.planes) if p != img.bci_plane] + [img.bci_plane]
        self.planes = img.planes
        self.stats = SourceStats()
        self.feedback: Feedback | None = None
        self.volumes = 0
        self._contacts: list[LickContact] = []

    def open(self) -> None:
        """Nothing to connect; render past the frames the set-up phase was shown."""
        for _ in range(self.skip):
            self.mouse.step(None)

    def poll_fds(self) -> list[Any]:
        """Paced: the node decides when to read."""
        return []

    def sense(self, feedback: Feedback) -> None:
        """Keep the newest verdict; the next frame is rendered having sensed it."""
        if self.feedback is None or feedback.frame >= self.feedback.frame:
            self.feedback = feedback

    def read(self) -> list[RawFrame]:
        """Render the next volume: one RawFrame per plane, the BCI plane last."""
        sim = self.mouse.step(self.feedback)
        now = time.monotonic_ns()
        truth = frame_truth(sim.truth)
        licks = int(sim.truth.get("contacts", sim.truth.get("licks", 0)))  # a lickport out of reach: no contact
        if licks:
            self._contacts.append(LickContact(frame=self.volumes, count=licks))
        base = self.volumes * self.planes
        self.volumes += 1
        self.stats.received += self.planes
        return [RawFrame(data=sim.data[p], index=base + k, plane=p, t_acq_ns=now, t_arrive_ns=now, truth=truth)
                for k, p in enumerate(self.order)]

    def take_contacts(self) -> list[LickContact]:
        """Lick contacts since the last call."""
        out, self._contacts = self._contacts, []
        return out

    def close(self) -> None:
        """Nothing to release."""

    def setup_truth(self) -> dict[str, Any]:
        """Ground truth of the set-up: today's field-of-view offset from day 1 (whole px)."""
        return {"fov_offset_px": list(self.mouse.fov_offset), "day": self.mouse.day}

    # ------------------------------------------------------------------ the simulated operator
    def suggest_groups(self, candidates: list[Any]) -> tuple[dict[str, list[int]], dict[str, Any]]:
        """Choose candidates as the experimenter would: the ones on the neurons this simulated brain uses
        for the BCI (a real rig's operator picks them on the image). Also scores the detection against the
        true footprints (recall and precision of the BCI-plane somata at IoU >= 0.5): the only use of truth.
        """
        from bcirig.processing.detection import match_rois
        from bcirig.processing.rois import Roi, RoiKind

        mouse = self.mouse
        plane = self.protocol.imaging.bci_plane
        fy, fx = mouse.fov_offset
        true_bci = [r.moved(fy, fx) for r in mouse.rois() if r.kind == RoiKind.SOMA and r.plane == plane]
        _, _, pairs = match_rois(candidates, true_bci, iou=0.3)
        by_truth = {j: i for i, j, _ in pairs}
        groups: dict[str, list[int]] = {}
        missing = []
        for j, roi in enumerate(true_bci):
            if j in by_truth:
                groups.setdefault(roi.group, []).append(by_truth[j])
            else:
                missing.append(roi.name)
        somata = [Roi.disk(f"s{k}", plane, (s.cy + fy, s.cx + fx), max(1.0, s.radius - 0.5))
                  for k, s in enumerate(mouse.sources) if s.kind == RoiKind.SOMA and s.plane == plane]
        recall, precision, _ = match_rois(candidates, somata, iou=0.5)
        score = {"recall": recall, "precision": precision, "somata": len(somata), "candidates": len(candidates),
                 "bci_missing": missing, "true_fov_offset": [fy, fx]}
        return groups, score
