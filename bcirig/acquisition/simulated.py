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

from bcirig.acquisition.base import LickContact, RawFrame, SourceStats
from bcirig.config import Protocol, Rig
from bcirig.messages import Feedback

RECORDED_TRUTH = ("shift", "licks")  # what a live session's truth table keeps (bcirig.setup.DEFAULT_TRUTH_FIELDS)


def make_mouse(protocol: Protocol, rig: Rig, state: Any = None) -> Any:
    """The simulated mouse a simulated rig images, configured from the protocol's simulation table."""
    import dataclasses

    from bcirig.sim import SimulatedMouse, parse_sim_config

    config = parse_sim_config(protocol.simulation, protocol.source_path or "<protocol>")
    # A session renders frames for the real pipeline, whatever level the table sets for sweeps.
    config = dataclasses.replace(config, level="pixels")
    return SimulatedMouse(protocol, config, seed=rig.source.seed, state=state)


class SimulatedSource:
    """Frames rendered by a simulated mouse that senses the task's feedback (paced, closed loop)."""

    paced = True
    poll_interval_s = 0.1

    def __init__(self, protocol: Protocol, rig: Rig, mouse: Any = None) -> None:
        self.mouse = mouse if mouse is not None else make_mouse(protocol, rig)
        img = protocol.imaging
        self.order = [p for p in range(img.planes) if p != img.bci_plane] + [img.bci_plane]
        self.planes = img.planes
        self.stats = SourceStats()
        self.feedback: Feedback | None = None
        self.volumes = 0
        self._contacts: list[LickContact] = []

    def open(self) -> None:
        """Nothing to connect."""

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
        truth = {k: sim.truth[k] for k in RECORDED_TRUTH if k in sim.truth}
        licks = int(sim.truth.get("licks", 0))
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
