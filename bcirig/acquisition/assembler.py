"""The assembler stage: raw plane images from any source -> checked volumes for the pipeline.

One instance per session, shared by every source kind, so every way in is checked and counted the same:

* **checked**: a plane image whose shape is not the protocol's (height, width), whose dtype is not the
  protocol's, or whose plane is out of range is counted as *malformed* with the reason, and never
  reaches the pipeline;
* **counted**: a gap in the microscope's frame index (index jumps by more than one) counts the missing
  plane images as *dropped*; an index that goes backwards (the acquisition was restarted, or a sender
  reconnected and counts afresh) is a *restart*, not a drop;
* **assembled**: plane images are kept per plane; when a frame of the BCI plane arrives and every plane
  has been seen, a :class:`Volume` (planes, height, width) is emitted with the newest image of every
  plane. The readout therefore updates on the BCI plane's frames, at the volume rate.

Volumes are numbered 0, 1, 2 ... as they reach the pipeline (``Volume.frame``, the session's frame
index, which the task counts); the microscope's own index, its timestamp and the drops and rejections
since the previous volume travel with each one and are recorded per frame in the session file.
Deterministic; no clock of its own (arrival times come from the source).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bcirig.acquisition.base import RawFrame
from bcirig.config import Imaging


@dataclass
class Volume:
    """One frame for the pipeline: every plane, with where it came from."""

    frame: int  # session frame index (0, 1, 2 ... volumes that reached the pipeline)
    data: np.ndarray  # (planes, height, width), the protocol's dtype
    acq_index: int  # the microscope's index of the BCI-plane image that completed the volume
    t_acq_ns: int  # its acquisition time on the microscope's clock, -1 if unknown
    t_arrive_ns: int  # its arrival on the rig (time.monotonic_ns)
    dropped: int  # plane images lost (index gaps) since the previous volume
    malformed: int  # plane images rejected (shape, dtype, plane) since the previous volume
    truth: dict[str, Any] = field(default_factory=dict)


class FrameAssembler:
    """Checks raw plane images against ``[imaging]``, counts gaps and rejections, assembles volumes."""

    def __init__(self, imaging: Imaging) -> None:
        self.planes, self.bci_plane = imaging.planes, imaging.bci_plane
        self.shape = (imaging.height, imaging.width)
        self.dtype = np.dtype(imaging.dtype)
        self.latest: list[np.ndarray | None] = [None] * self.planes
        self.last_index: int | None = None
        self.frames = 0  # volumes emitted
        self.dropped = 0  # totals over the session
        self.malformed = 0
        self.restarts = 0
        self.last_error = ""
        self._dropped_since = 0
        self._malformed_since = 0

    def _reject(self, raw: RawFrame, why: str) -> None:
        self.malformed += 1
        self._malformed_since += 1
        self.last_error = f"microscope frame {raw.index}: {why}"

    def push(self, raw: RawFrame) -> Volume | None:
        """Take one plane image; returns a volume when this image completes one, else None."""
        if raw.index >= 0:
            if self.last_index is not None:
                if raw.index > self.last_index + 1:
                    gap = raw.index - self.last_index - 1
                    self.dropped += gap
                    self._dropped_since += gap
                elif raw.index <= self.last_index:
                    self.restarts += 1
            self.last_index = raw.index
        data = raw.data
        if not isinstance(data, np.ndarray) or data.shape != self.shape:
            shape = getattr(data, "shape", type(data).__name__)
            self._reject(raw, f"shape {shape} != expected {self.shape} (imaging.height, imaging.width)")
            return None
        if data.dtype != self.dtype:
            self._reject(raw, f"dtype {data.dtype} != expected {self.dtype} (imaging.dtype)")
            return None
        plane = raw.plane if raw.plane >= 0 else (raw.index % self.planes if raw.index >= 0 else 0)
        if plane >= self.planes:
            self._reject(raw, f"plane {plane} but the protocol images {self.planes} plane(s)")
            return None
        self.latest[plane] = data
        if plane != self.bci_plane or any(p is None for p in self.latest):
            return None
        volume = data[None] if self.planes == 1 else np.stack([p for p in self.latest if p is not None])  # all, here
        out = Volume(frame=self.frames, data=volume, acq_index=raw.index, t_acq_ns=raw.t_acq_ns,
                     t_arrive_ns=raw.t_arrive_ns, dropped=self._dropped_since, malformed=self._malformed_since,
                     truth=raw.truth)
        self.frames += 1
        self._dropped_since = self._malformed_since = 0
        return out

    def counters(self) -> dict[str, int]:
        """Session totals, for heartbeats and the summary."""
        return {"frames": self.frames, "dropped_frames": self.dropped, "malformed_frames": self.malformed,
                "acquisition_restarts": self.restarts}
