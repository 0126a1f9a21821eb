"""The frame-source contract: what every way in from a microscope (or the simulator) delivers.

A :class:`FrameSource` yields :class:`RawFrame` objects, one per plane image, each carrying the
microscope's own frame index, the plane, the acquisition time when the microscope gives one, and the
rig's arrival time (``time.monotonic_ns()``). Sources do no science: they decode bytes into frames and
count what could not be decoded. Checking frames against the protocol, counting gaps in the
microscope's index as dropped frames, and assembling planes into the volumes the pipeline processes is
the job of one stage, :class:`~bcirig.acquisition.assembler.FrameAssembler`, shared by every source.

Two kinds of source:

* **free-running** (``paced = False``): a microscope sends frames when it acquires them. The node wakes
  on the source's file descriptors (``poll_fds``), or every ``poll_interval_s`` when it has none (a
  directory being written), and calls :meth:`FrameSource.read`, which never blocks.
* **paced** (``paced = True``): the simulated microscope produces the next frame when asked; the node
  sets the pace (the imaging rate, or lockstep with the task).

A source that closes the loop by itself (the simulated mouse sees the feedback and licks) also
implements :class:`ClosedLoop`; its behaviour comes back through :meth:`ClosedLoop.take_contacts`, a
channel of its own, never through the frame contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from bcirig.messages import Feedback


class SourceError(RuntimeError):
    """A source that cannot start or go on (a port in use, a directory missing, a bad key file)."""


@dataclass
class RawFrame:
    """One plane image as it arrived, before any check against the protocol."""

    data: np.ndarray  # (height, width) as decoded; checked by the assembler, never trusted here
    index: int  # the microscope's own frame counter (every plane's frame counts); -1 when unknown
    plane: int = -1  # 0-based plane; -1 = unknown, the assembler uses index modulo planes
    t_acq_ns: int = -1  # acquisition time on the microscope's clock (ns); -1 when it gives none
    t_arrive_ns: int = -1  # time.monotonic_ns() on the rig when the last byte arrived
    truth: dict[str, Any] = field(default_factory=dict)  # ground truth of a simulated source (shift ...)


@dataclass
class SourceStats:
    """What a source could not turn into frames, and how its link behaved. Counters only grow."""

    received: int = 0  # frames decoded (before the assembler's checks)
    malformed: int = 0  # messages or byte runs that could not be a frame (garbage, bad header, truncated)
    reconnects: int = 0  # sender connections after the first
    disconnects: int = 0
    refused: int = 0  # connections or messages refused (unlisted CurveZMQ key, second sender)
    last_error: str = ""  # the most recent problem, in words

    def as_counters(self) -> dict[str, int]:
        """The integer counters, for heartbeats and the session file."""
        return {"source_received": self.received, "source_malformed": self.malformed,
                "source_reconnects": self.reconnects, "source_disconnects": self.disconnects,
                "source_refused": self.refused}


@runtime_checkable
class FrameSource(Protocol):
    """Frames in from a microscope, a file, a network sender or the simulator."""

    paced: bool  # True: produces one volume's frames per read() (the node paces); False: free-running
    poll_interval_s: float  # free-running sources without fds: how often the node calls read()
    stats: SourceStats

    def open(self) -> None:
        """Bind, connect or open; raise :class:`SourceError` with a clear message if that fails."""
        ...

    def poll_fds(self) -> list[Any]:
        """Sockets or file descriptors that become readable when data arrives ([] = poll on a timer)."""
        ...

    def read(self) -> list[RawFrame]:
        """Every complete frame that has arrived since the last call; never blocks, never raises on bad
        input (bad input is counted in ``stats`` and skipped)."""
        ...

    def close(self) -> None:
        """Release sockets and files (idempotent)."""
        ...


@dataclass(frozen=True)
class LickContact:
    """The simulated tongue touched the lick sensor on this frame (``count`` contacts)."""

    frame: int
    count: int


@runtime_checkable
class ClosedLoop(Protocol):
    """A source that senses the task's feedback itself (the simulated mouse) and acts back."""

    def sense(self, feedback: Feedback) -> None:
        """The task's verdict on the newest frame (what the mouse sees, hears and is given)."""
        ...

    def take_contacts(self) -> list[LickContact]:
        """Lick contacts since the last call, for the rig's lick sensor."""
        ...
