"""What every exporter reads from a session file, with one time base.

Times are seconds from the session's first frame on the microscope's frame clock: frame ``t`` was
acquired ``volume_t / frame_rate_hz`` after the first, where ``volume_t`` counts microscope volumes
(the acquisition table's ``acq_index``, so frames the microscope dropped leave gaps). Lockstep and
simulated sessions therefore get the imaging times the mouse lived through, not the machine's compute
times. Events stamped on the rig's clock (licks) are placed on this time base by their arrival time,
interpolated between the frames that arrived around them.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bcirig.processing import RoiSet
from bcirig.recording.integrity import open_session


class ExportError(ValueError):
    """The session cannot be exported as asked (the message says why and what to do)."""


@dataclass
class SessionData:
    """A session file's tables, ROIs and metadata, with every frame's time."""

    path: Path
    attrs: dict[str, Any]
    protocol_text: str
    rig_text: str
    protocol: dict[str, Any]  # the protocol table as parsed TOML (names, rates)
    rois: RoiSet
    reference: np.ndarray  # (planes, H, W)
    readout: dict[str, np.ndarray]
    feedback: dict[str, np.ndarray]
    trials: dict[str, np.ndarray]
    commands: dict[str, np.ndarray]
    acks: dict[str, np.ndarray]
    acquisition: dict[str, np.ndarray]
    events: list[dict[str, Any]]
    frame_rate_hz: float
    planes: int
    bci_plane: int
    has_frames: bool
    frame_time: np.ndarray  # seconds, indexed by the session's frame number
    calibration_windows: dict[str, np.ndarray] | None = None  # read on demand (the NWB export reads it)

    @property
    def calibration(self) -> dict[str, Any]:
        """The calibration event's numbers ({} if the session never calibrated)."""
        return next((e["data"] for e in self.events if e["name"] == "calibration"), {})

    def time_of(self, frames: np.ndarray) -> np.ndarray:
        """Seconds of the given frame numbers (NaN for -1 and out-of-range numbers)."""
        f = np.asarray(frames, np.int64)
        ok = (f >= 0) & (f < len(self.frame_time))
        out = np.full(f.shape, np.nan)
        out[ok] = self.frame_time[f[ok]]
        return out

    def host_time(self, host_ns: np.ndarray) -> np.ndarray:
        """Rig-clock stamps (time.monotonic_ns) placed on the frame time base by the frames' arrivals."""
        arrive, frames = self.acquisition.get("t_arrive_ns"), self.acquisition.get("frame")
        if arrive is None or frames is None or not len(arrive) or not (arrive > 0).all():
            return np.full(np.shape(host_ns), np.nan)
        t: np.ndarray = np.interp(np.asarray(host_ns, np.float64), arrive.astype(np.float64), self.time_of(frames))
        return t


def _frame_times(n: int, acq: dict[str, np.ndarray], rate: float, planes: int) -> np.ndarray:
    t = np.arange(n, dtype=np.float64) / rate
    if acq and len(acq.get("frame", ())):
        idx = acq["acq_index"].astype(np.int64)
        frames = acq["frame"].astype(np.int64)
        # microscope volumes since the first one; one image per plane per volume
        volume = (idx - idx[0]) // max(1, planes) if idx.min() >= 0 else frames - frames[0]
        if np.all(np.diff(volume) >= 1):
            ok = (frames >= 0) & (frames < n)
            t[frames[ok]] = volume[ok] / rate
    return t


def load_session_data(path: str | Path) -> SessionData:
    """Read a session file for export (raises SessionFileError if it is missing, cut short or not bcirig's)."""
    with open_session(path) as sf:
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in sf.attrs.items()}
        text = sf.protocol_text
        try:
            proto = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            proto = {}
        img = proto.get("imaging", {})
        rate = float(img.get("frame_rate_hz", 30.0))
        planes, bci = int(img.get("planes", 1)), int(img.get("bci_plane", 0))
        readout = sf.table("readout")
        acq = sf.table("acquisition") if "acquisition" in sf.f else {}
        n = int(max(readout["frame"].max(initial=-1), acq["frame"].max(initial=-1) if acq else -1)) + 1
        data = SessionData(
            path=Path(path), attrs=attrs, protocol_text=text, rig_text=str(attrs.get("rig", "")), protocol=proto,
            rois=RoiSet.from_arrays(sf.rois()), reference=sf.reference(), readout=readout,
            feedback=sf.table("feedback"), trials=sf.table("trials"), commands=sf.table("commands"),
            acks=sf.table("acks"), acquisition=acq, events=sf.events(), frame_rate_hz=rate, planes=planes,
            bci_plane=bci, has_frames=sf.has_frames, frame_time=_frame_times(n, acq, rate, planes),
        )
    return data


def summary_of(data: SessionData) -> dict[str, Any]:
    """The summary the session wrote at its end ({} if it has none)."""
    raw = data.attrs.get("summary")
    return json.loads(raw) if raw else {}
