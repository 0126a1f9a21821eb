"""The operator's console: live readout against threshold, dF/F per ROI, trial counts (pyqtgraph)."""

from __future__ import annotations

import collections
import math

import numpy as np
import pyqtgraph as pg
from PyQt6.QtWidgets import QLabel, QVBoxLayout, QWidget

from bcirig.messages import Event, EventKind, Feedback, Readout

HISTORY_FRAMES = 900  # 30 s at 30 Hz


class Console(QWidget):
    """Live view of a running session; fed messages, redrawn by :meth:`refresh` (a few times a second)."""

    def __init__(self, *, title: str = "bcirig", frame_rate_hz: float = 30.0, history: int = HISTORY_FRAMES) -> None:
        super().__init__()
        self.setWindowTitle(f"bcirig console — {title}")
        self.rate = frame_rate_hz
        self.frames: collections.deque[int] = collections.deque(maxlen=history)
        self.readout: collections.deque[float] = collections.deque(maxlen=history)
        self.dff: collections.deque[np.ndarray] = collections.deque(maxlen=history)
        self.threshold = float("nan")
        self.baseline_min = 0.0
        self.trials = self.hits = self.aborts = self.timeouts = 0
        self.phase = "waiting"
        self.trial = 0
        self.source: dict[str, int] = {}  # the pipeline node's acquisition counters (dropped, rejected ...)
        self.status = QLabel("waiting for the session to start")
        self.readout_plot = pg.PlotWidget(title="readout − baseline minimum")
        self.readout_curve = self.readout_plot.plot(pen=pg.mkPen("w", width=1))
        self.threshold_line = pg.InfiniteLine(angle=0, pen=pg.mkPen((255, 165, 0), width=2))
        self.readout_plot.addItem(self.threshold_line)
        self.readout_plot.setLabel("bottom", "time (s)")
        self.dff_plot = pg.PlotWidget(title="dF/F per ROI (offset per ROI)")
        self.dff_plot.setLabel("bottom", "time (s)")
        self.dff_curves: list[pg.PlotDataItem] = []
        layout = QVBoxLayout(self)
        layout.addWidget(self.status)
        layout.addWidget(self.readout_plot, 2)
        layout.addWidget(self.dff_plot, 2)
        self.resize(900, 650)

    def on_readout(self, msg: Readout) -> None:
        """Keep the newest readouts."""
        self.frames.append(msg.frame)
        self.readout.append(msg.readout)
        self.dff.append(np.array(msg.dff, dtype=np.float32))

    def on_feedback(self, msg: Feedback) -> None:
        """Phase, trial and threshold from the task."""
        self.phase, self.trial = msg.phase.value, msg.trial
        if math.isfinite(msg.threshold):
            self.threshold = msg.threshold

    def on_event(self, msg: Event) -> None:
        """Count outcomes."""
        if msg.name is EventKind.TRIAL_END:
            self.trials += 1
            outcome = msg.data.get("outcome")
            self.hits += outcome == "hit"
            self.aborts += outcome == "abort"
            self.timeouts += outcome == "timeout"
        elif msg.name is EventKind.CALIBRATION:
            self.baseline_min = float(msg.data.get("baseline_min", 0.0))
            self.threshold = float(msg.data.get("threshold", float("nan")))

    def on_source_counters(self, counters: dict[str, int]) -> None:
        """The frame source's totals, from the pipeline node's heartbeat."""
        self.source = dict(counters)

    def refresh(self) -> None:
        """Redraw from the buffers."""
        rate = f"{self.hits / self.trials:.0%}" if self.trials else "n/a"
        s = self.source
        frames = (f"\nmicroscope frames dropped {s.get('dropped_frames', 0)}   rejected {s.get('malformed_frames', 0)}"
                  f"   unreadable input {s.get('source_malformed', 0)}   reconnects {s.get('source_reconnects', 0)}")
        self.status.setText(f"phase {self.phase}   trial {self.trial}   done {self.trials}   hits {self.hits}"
                            f"   aborts {self.aborts}   timeouts {self.timeouts}   hit rate {rate}" + frames)
        if not self.frames:
            return
        t = np.asarray(self.frames, dtype=np.float64) / self.rate
        y = np.asarray(self.readout, dtype=np.float64) - self.baseline_min
        self.readout_curve.setData(t, np.where(np.isfinite(y), y, 0.0), connect="finite")
        if math.isfinite(self.threshold):
            self.threshold_line.setValue(self.threshold)
        widths = {d.size for d in self.dff}
        if len(widths) != 1:
            return  # a rejected frame's row in view; draw next time
        dff = np.stack(self.dff)
        while len(self.dff_curves) < dff.shape[1]:
            self.dff_curves.append(self.dff_plot.plot(pen=pg.intColor(len(self.dff_curves), hues=12)))
        spacing = max(0.5, float(np.nanpercentile(dff, 99))) if np.isfinite(dff).any() else 1.0
        for i, curve in enumerate(self.dff_curves):
            curve.setData(t, np.nan_to_num(dff[:, i]) + i * spacing)
