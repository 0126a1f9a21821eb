"""Typing contracts: one small Protocol per stage and per device capability.

(Named ``interfaces`` because in this project a "protocol" is an experiment file.)

Stages hold the science and are plain objects: no sockets, threads or clocks of their own, deterministic
given their inputs and seed. Nodes (``bcirig.nodes``) only connect stages to the bus.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from bcirig.messages import Command, Event, Feedback, Readout


@dataclass
class TaskStep:
    """What the task decided on one frame."""

    feedback: Feedback
    commands: list[Command] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


@dataclass
class SimFrame:
    """One simulated frame and the ground truth behind it."""

    data: np.ndarray  # (planes, height, width), the protocol's dtype
    truth: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class PipelineStage(Protocol):
    """Frame -> readout (motion correction, ROI extraction, F0, dF/F, decoder, smoothing)."""

    def process(self, frame: np.ndarray, index: int) -> Readout:
        """Process frame ``index``; a bad frame returns ``Readout(valid=False)``, never raises."""
        ...


@runtime_checkable
class TaskStage(Protocol):
    """Readout -> feedback, device commands and events (trial state machine)."""

    def step(self, readout: Readout) -> TaskStep:
        """Advance one frame."""
        ...

    def safe(self, frame: int, reason: str) -> TaskStep:
        """Enter the safe state: no reward, grey screen, session over."""
        ...

    @property
    def done(self) -> bool:
        """True once the session's last trial has ended."""
        ...


@runtime_checkable
class MouseStage(Protocol):
    """Feedback -> the next frame (a simulated mouse under a simulated microscope)."""

    def step(self, feedback: Feedback | None) -> SimFrame:
        """Render the next frame, having sensed the task's feedback for the previous one."""
        ...


class ValveReply(Protocol):
    """A valve controller's acknowledgement of one command (``bcirig.devices.ValveAck``)."""

    @property
    def ok(self) -> bool:
        """False for a refused command (too soon, busy, over a limit)."""
        ...

    @property
    def error(self) -> str:
        """Why it was refused (the device's error code and detail); empty when ``ok``."""
        ...

    @property
    def open_ms(self) -> float:
        """The valve open time the device actually used, after its own clamp."""
        ...

    @property
    def device_ms(self) -> int:
        """The firmware's clock when the command ran; -1 for a device without one."""
        ...


@runtime_checkable
class RewardValve(Protocol):
    """The reward valve controller capability (real firmware over serial, or its simulated twin)."""

    def reward(self, ul: float) -> ValveReply:
        """Deliver ``ul`` microlitres; returns the device acknowledgement."""
        ...

    def opto(self, ms: float) -> ValveReply:
        """Pulse the optogenetics TTL; returns the device acknowledgement."""
        ...

    def close(self) -> None:
        """Close the valve and release the port."""
        ...


@runtime_checkable
class Actuator(Protocol):
    """A motorised actuator moving along one axis, e.g. the lickport (a Zaber stage or its twin)."""

    def position_mm(self) -> float:
        """Where it is now."""
        ...

    def set_speed(self, mm_s: float) -> float:
        """Move at a signed speed until a limit (0 stops); returns the speed commanded after clamping."""
        ...

    def move_to(self, mm: float) -> float:
        """Move to a position; returns the target used after clamping."""
        ...

    def stop(self) -> None:
        """Stop now."""
        ...

    def close(self) -> None:
        """Stop and release the port."""
        ...
