"""Test-only frame sources, loaded by rig files through ``[source] kind = "custom"``.

Fault injection lives here, not in the production node runtime: each class is a real FrameSource that
misbehaves the way a misconfigured scanner or a broken sender would.
"""

from __future__ import annotations

from typing import Any

from bcirig.acquisition import RawFrame
from bcirig.acquisition.simulated import SimulatedSource
from bcirig.config import Protocol, Rig


class WrongShapeSource(SimulatedSource):
    """The simulated microscope, but the images of volumes ``bad_at`` come out half as wide."""

    def __init__(self, protocol: Protocol, rig: Rig, options: dict[str, Any]) -> None:
        super().__init__(protocol, rig)
        self.bad_at = {int(i) for i in options.get("bad_at", [])}

    def read(self) -> list[RawFrame]:
        volume = self.volumes
        frames = super().read()
        if volume in self.bad_at:
            for raw in frames:
                raw.data = raw.data[:, : raw.data.shape[1] // 2]
        return frames
