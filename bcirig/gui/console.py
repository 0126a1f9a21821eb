"""The operator's console (pyqtgraph): what the session is doing, and the controls that steer it.

Views: the live (or mean) image with the ROI outlines coloured by group; dF/F of the BCI ROIs; the
readout against the threshold, the baseline minimum and the feedback bins; what the mouse sees now;
the trial outcomes as a raster with the running hit rate; motion shifts and registration quality;
per-stage latency (median, p99 over the last minute); node health (heartbeats, dropped and malformed
frames, message gaps). The data is kept by :class:`~bcirig.gui.console_state.ConsoleState`; this widget
only draws it, when :meth:`Console.refresh` is called (at most at the screen rate).

Controls: start baseline, start trials, pause, resume, stop; manual reward and valve flush, each behind
a confirmation (the dialog does not block: the console keeps receiving while it is open). Each control
calls ``send(command, value)``, which the console node turns into a request to the supervisor
(:mod:`bcirig.control_plane`); the supervisor's one-line answer is shown by :meth:`Console.on_answer`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt
from PyQt6.QtGui import QFont, QImage, QPixmap
from PyQt6.QtWidgets import (
    QDoubleSpinBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from bcirig.gui.console_state import HISTORY_FRAMES, ConsoleState
from bcirig.gui.grating import screen_image
from bcirig.messages import Ack, Event, Feedback, Heartbeat, OperatorCommand, Outcome, Readout, Screen
from bcirig.processing.rois import RoiSet

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)

# Group colours (RGB), the same in every view: outlines, dF/F traces, legends.
GROUP_COLOURS: dict[str, tuple[int, int, int]] = {
    "P+": (255, 64, 64), "P-": (64, 160, 255), "E1": (255, 160, 0), "E2": (0, 200, 200),
    "CN": (255, 0, 255), "none": (200, 200, 200),
}
EXTRA_COLOURS = [(150, 255, 80), (255, 120, 200), (180, 140, 255), (255, 255, 90)]
OUTCOME_COLOURS = {Outcome.HIT: (60, 220, 60), Outcome.ABORT: (255, 70, 70), Outcome.TIMEOUT: (150, 150, 150)}
READOUT_PEN = (255, 255, 255)
MAX_TRACES = 40  # dF/F traces drawn (the BCI ROIs are typically 8-10 of the hundreds imaged)
THRESHOLD_PEN = (255, 165, 0)
Send = Callable[[str, float], None]


def group_colour(group: str, groups: list[str] | None = None) -> tuple[int, int, int]:
    """The colour of ``group``: a fixed one for the usual names, else one by its position in ``groups``."""
    if group in GROUP_COLOURS:
        return GROUP_COLOURS[group]
    i = (groups or [group]).index(group) if group in (groups or []) else 0
    return EXTRA_COLOURS[i % len(EXTRA_COLOURS)]


def outline_overlay(rois: RoiSet, shape: tuple[int, int], plane: int | None = None) -> np.ndarray:
    """(height, width, 4) uint8 RGBA: each ROI's boundary pixels (inside pixels with an outside
    4-neighbour) in its group's colour, transparent elsewhere."""
    h, w = shape
    out = np.zeros((h, w, 4), np.uint8)
    groups = list(dict.fromkeys(rois.groups))
    for roi in rois:
        if plane is not None and roi.plane != plane:
            continue
        ok = (roi.y >= 0) & (roi.y < h) & (roi.x >= 0) & (roi.x < w) & (roi.w > 0)
        ys, xs = roi.y[ok], roi.x[ok]
        if not ys.size:
            continue
        y0, x0 = ys.min(), xs.min()
        m = np.zeros((ys.max() - y0 + 3, xs.max() - x0 + 3), bool)
        m[ys - y0 + 1, xs - x0 + 1] = True
        inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
        edge = m[1:-1, 1:-1] & ~inner
        ey, ex = np.nonzero(edge)
        out[ey + y0, ex + x0, :3] = group_colour(roi.group, groups)
        out[ey + y0, ex + x0, 3] = 255
    return out


def _mono(size: int = 9) -> QFont:
    font = QFont("monospace", size)
    font.setStyleHint(QFont.StyleHint.Monospace)
    return font


class Console(QWidget):
    """Live view of a running session with its controls; fed messages, redrawn by :meth:`refresh`."""

    def __init__(self, *, title: str = "bcirig", frame_rate_hz: float = 30.0, history: int = HISTORY_FRAMES,
                 steps: int = 7, send: Send | None = None) -> None:
        super().__init__()
        self.setWindowTitle(f"bcirig console — {title}")
        self.data = ConsoleState(frame_rate_hz=frame_rate_hz, history=history, steps=steps)
        self.rate = frame_rate_hz
        self.send = send
        self.rois: RoiSet | None = None
        self.bci: np.ndarray | None = None  # indices of the BCI ROIs (grouped somata) in the readout
        self.reference: np.ndarray | None = None
        self.pending_dialog: QMessageBox | None = None
        self.answers: list[str] = []
        self._shown_feedback: tuple[str, float] = ("", float("nan"))
        self._image_frame_drawn = -2

        self.status = QLabel("waiting for the session to start")
        self.feedback_label = QLabel("—")
        self.feedback_label.setFont(_mono(11))
        self.screen_swatch = QLabel()
        self.screen_swatch.setFixedSize(96, 72)

        # image with ROI outlines
        self.image_view = pg.GraphicsLayoutWidget()
        self.image_box = self.image_view.addViewBox(lockAspect=True, invertY=True, enableMouse=True)
        self.image_item = pg.ImageItem()
        self.overlay_item = pg.ImageItem()
        self.image_box.addItem(self.image_item)
        self.image_box.addItem(self.overlay_item)
        self.image_title = QLabel("image: waiting")

        # readout against threshold, baseline minimum and the feedback bins
        self.readout_plot = pg.PlotWidget(title="readout − baseline minimum")
        self.readout_plot.setLabel("bottom", "time (s)")
        self.readout_curve = self.readout_plot.plot(pen=pg.mkPen(READOUT_PEN, width=1))
        self.threshold_line = pg.InfiniteLine(angle=0, pen=pg.mkPen(THRESHOLD_PEN, width=2))
        self.baseline_line = pg.InfiniteLine(pos=0.0, angle=0, pen=pg.mkPen((120, 200, 255), width=1))
        self.readout_plot.addItem(self.threshold_line)
        self.readout_plot.addItem(self.baseline_line)
        self.bin_lines: list[pg.InfiniteLine] = []

        self.dff_plot = pg.PlotWidget(title="dF/F of the BCI ROIs (offset per ROI)")
        self.dff_plot.setLabel("bottom", "time (s)")
        for plot in (self.readout_plot, self.dff_plot):  # drawn with no more points than pixels
            plot.plotItem.setDownsampling(auto=True, mode="peak")
            plot.plotItem.setClipToView(True)
        self.dff_curves: list[pg.PlotDataItem] = []  # one per group
        self.dff_traces = 0

        self.motion_plot = pg.PlotWidget(title="motion px (dy white, dx cyan) · corr (green)")
        self.dy_curve = self.motion_plot.plot(pen=pg.mkPen((255, 255, 255), width=1))
        self.dx_curve = self.motion_plot.plot(pen=pg.mkPen((0, 220, 220), width=1))
        self.corr_view = pg.ViewBox()
        self.motion_plot.plotItem.showAxis("right")
        self.motion_plot.plotItem.scene().addItem(self.corr_view)
        self.motion_plot.plotItem.getAxis("right").linkToView(self.corr_view)
        self.corr_view.setXLink(self.motion_plot.plotItem)
        self.corr_view.setYRange(0.0, 1.0)
        self.corr_curve = pg.PlotDataItem(pen=pg.mkPen((80, 255, 80), width=1))
        self.corr_view.addItem(self.corr_curve)
        self.motion_plot.plotItem.vb.sigResized.connect(
            lambda: self.corr_view.setGeometry(self.motion_plot.plotItem.vb.sceneBoundingRect()))

        self.raster_plot = pg.PlotWidget(title="trials (hit, abort, timeout) · hit rate, last 10")
        self.raster_plot.setYRange(-0.25, 1.05)
        self.raster_plot.setLabel("bottom", "trial")
        self.raster_dots = pg.ScatterPlotItem(size=9, pen=None)
        self.raster_plot.addItem(self.raster_dots)
        self.rate_curve = self.raster_plot.plot(pen=pg.mkPen((60, 220, 60), width=2))

        self.latency_label = QLabel("latency: waiting")
        self.latency_label.setFont(_mono())
        self.health_label = QLabel("nodes: waiting")
        self.health_label.setFont(_mono())
        self.answer_label = QLabel("")
        self.answer_label.setFont(_mono())
        self.answer_label.setWordWrap(True)

        # controls
        self.buttons: dict[str, QPushButton] = {}
        controls = QGridLayout()
        for i, (command, text) in enumerate((
            (OperatorCommand.START_BASELINE.value, "Start baseline"),
            (OperatorCommand.START_TRIALS.value, "Start trials"),
            (OperatorCommand.PAUSE.value, "Pause"), (OperatorCommand.RESUME.value, "Resume"), ("stop", "Stop"),
        )):
            b = QPushButton(text)
            b.clicked.connect(lambda _=False, c=command: self.request(c))
            self.buttons[command] = b
            controls.addWidget(b, 0, i)
        self.reward_ul = QDoubleSpinBox()
        self.reward_ul.setRange(0.0, 50.0)
        self.reward_ul.setDecimals(1)
        self.reward_ul.setSuffix(" µl")
        self.reward_ul.setSpecialValueText("protocol's volume")
        self.flush_ms = QDoubleSpinBox()
        self.flush_ms.setRange(1.0, 5000.0)
        self.flush_ms.setValue(200.0)
        self.flush_ms.setDecimals(0)
        self.flush_ms.setSuffix(" ms")
        for col, (command, text, box) in enumerate(((OperatorCommand.REWARD.value, "Reward…", self.reward_ul),
                                                    (OperatorCommand.FLUSH.value, "Flush valve…", self.flush_ms))):
            b = QPushButton(text)
            b.clicked.connect(lambda _=False, c=command, v=box: self.request(c, v.value()))
            self.buttons[command] = b
            controls.addWidget(box, 1, 2 * col)
            controls.addWidget(b, 1, 2 * col + 1)

        left = QVBoxLayout()
        left.addWidget(self.image_title)
        left.addWidget(self.image_view, 5)
        fb = QHBoxLayout()
        fb.addWidget(self.screen_swatch)
        fb.addWidget(self.feedback_label, 1)
        left.addLayout(fb)
        left.addLayout(controls)
        left.addWidget(self.answer_label)
        for label in (self.latency_label, self.health_label, self.status, self.answer_label):
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # never widen the window
        right = QGridLayout()
        right.setColumnStretch(0, 1)
        right.setColumnStretch(1, 1)
        right.addWidget(self.readout_plot, 0, 0, 1, 2)
        right.addWidget(self.dff_plot, 1, 0)
        right.addWidget(self.motion_plot, 1, 1)
        right.addWidget(self.raster_plot, 2, 0)
        tables = QVBoxLayout()
        tables.addWidget(self.latency_label)
        tables.addWidget(self.health_label, 1)
        right.addLayout(tables, 2, 1)
        body = QHBoxLayout()
        body.addLayout(left, 2)
        body.addLayout(right, 3)
        outer = QVBoxLayout(self)
        outer.addWidget(self.status)
        outer.addLayout(body, 1)
        self.resize(1500, 950)

    # ------------------------------------------------------------------ counts (for the node's heartbeat)
    @property
    def trials(self) -> int:
        """Trials ended so far."""
        return self.data.trials

    @property
    def hits(self) -> int:
        """Hits so far."""
        return self.data.hits

    @property
    def source(self) -> dict[str, int]:
        """The frame source's counters, from the pipeline node's heartbeat."""
        return self.data.source

    # ------------------------------------------------------------------ input
    def set_setup(self, rois: RoiSet, reference: np.ndarray, bci_plane: int = 0) -> None:
        """The session's ROIs and reference image (the setup.npz every node loads)."""
        self.rois = rois
        ref = np.asarray(reference, np.float32)
        self.reference = ref[bci_plane] if ref.ndim == 3 else ref
        grouped = [i for i, r in enumerate(rois) if r.group != "none" and r.kind == "soma"]
        self.bci = np.asarray(grouped, np.intp) if grouped else None
        self.overlay_item.setImage(outline_overlay(rois, self.reference.shape, plane=bci_plane), levels=(0, 255))
        lo, hi = np.percentile(self.reference, [1, 99.7])
        self.levels = (float(lo), float(hi if hi > lo else lo + 1))
        self.image_item.setImage(self.reference, levels=self.levels)
        self.image_title.setText(f"mean image (reference) · {len(rois)} ROIs")

    def on_readout(self, msg: Readout) -> None:
        """A readout (keeps the newest ``history`` frames)."""
        self.data.on_readout(msg)

    def on_feedback(self, msg: Feedback) -> None:
        """The task's verdict on a frame."""
        self.data.on_feedback(msg)

    def on_event(self, msg: Event) -> None:
        """A trial outcome, the calibration, an operator event."""
        self.data.on_event(msg)

    def on_ack(self, msg: Ack) -> None:
        """A device acknowledgement (the valve's latency)."""
        self.data.on_ack(msg)

    def on_heartbeat(self, msg: Heartbeat) -> None:
        """A node's heartbeat (health view)."""
        self.data.on_heartbeat(msg)

    def on_source_counters(self, counters: dict[str, int]) -> None:
        """The frame source's totals, from the pipeline node's heartbeat."""
        self.data.source = dict(counters)

    def on_image(self, frame: int, image: np.ndarray) -> None:
        """The newest live image of the BCI plane."""
        self.data.on_image(frame, image)

    # ------------------------------------------------------------------ controls
    def request(self, command: str, value: float = 0.0) -> None:
        """A control was used: reward, flush and stop ask first (without blocking), the others go at once."""
        if command in (OperatorCommand.REWARD.value, OperatorCommand.FLUSH.value, "stop"):
            what = {OperatorCommand.REWARD.value: f"Give a manual reward of "
                    f"{'the protocol volume' if value == 0 else f'{value:g} µl'} now?",
                    OperatorCommand.FLUSH.value: f"Open the valve for {value:g} ms to flush the line?",
                    "stop": "Stop the session now? (grey screen, valve closed; the file keeps everything)"}[command]
            box = QMessageBox(QMessageBox.Icon.Question, "bcirig — confirm", what,
                              QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, self)
            box.setDefaultButton(QMessageBox.StandardButton.Cancel)
            box.finished.connect(lambda result, c=command, v=value: self._confirmed(c, v, result))
            self.pending_dialog = box
            box.open()
            return
        self._send(command, value)

    def _confirmed(self, command: str, value: float, result: int) -> None:
        self.pending_dialog = None
        if result == QMessageBox.StandardButton.Yes.value:
            self._send(command, value)
        else:
            self.on_answer_text(f"{command}: cancelled")

    def _send(self, command: str, value: float) -> None:
        if self.send is None:
            self.on_answer_text(f"{command}: not connected to a session")
            return
        self.send(command, value)

    def on_answer_text(self, text: str) -> None:
        """Show one line of the supervisor's answers (the last five)."""
        self.answers = [*self.answers[-4:], text]
        self.answer_label.setText("\n".join(self.answers))

    def on_answer(self, answer: Any) -> None:
        """The supervisor's answer to a request (a :class:`bcirig.control_plane.Answer`)."""
        self.on_answer_text(("ok: " if answer.ok else "") + answer.text)

    # ------------------------------------------------------------------ drawing
    def refresh(self) -> None:
        """Redraw every view from the state (call at most at the screen rate)."""
        d = self.data
        c = d.counts
        rate = f"{c.hit_rate:.0%}" if c.trials else "n/a"
        s = d.source
        frames = (f"\nmicroscope frames dropped {s.get('dropped_frames', 0)}   rejected {s.get('malformed_frames', 0)}"
                  f"   unreadable input {s.get('source_malformed', 0)}   reconnects {s.get('source_reconnects', 0)}")
        self.status.setText(f"phase {d.phase}   trial {d.trial}   done {c.trials}   hits {c.hits}"
                            f"   aborts {c.aborts}   timeouts {c.timeouts}   hit rate {rate}" + frames)
        self._draw_feedback()
        self._draw_image()
        self._draw_trials()
        self._draw_tables()
        if not d.frames:
            return
        t = np.asarray(d.frames, dtype=np.float64) / self.rate
        y = np.asarray(d.readout, dtype=np.float64) - d.baseline_min
        self.readout_curve.setData(t, np.where(np.isfinite(y), y, 0.0), connect="finite")
        if math.isfinite(d.threshold):
            self.threshold_line.setValue(d.threshold)
            edges = d.bin_edges()
            while len(self.bin_lines) < len(edges):
                line = pg.InfiniteLine(angle=0, pen=pg.mkPen((110, 110, 110), width=1, style=Qt.PenStyle.DotLine))
                self.readout_plot.addItem(line)
                self.bin_lines.append(line)
            for line, e in zip(self.bin_lines, edges, strict=False):
                line.setValue(e)
        shifts = np.asarray(d.shift, np.float64)
        self.dy_curve.setData(t, np.nan_to_num(shifts[:, 0]))
        self.dx_curve.setData(t, np.nan_to_num(shifts[:, 1]))
        self.corr_curve.setData(t, np.nan_to_num(np.asarray(d.corr, np.float64)))
        self._draw_dff(t)

    def _draw_dff(self, t: np.ndarray) -> None:
        """The BCI ROIs' dF/F, offset per ROI: one curve per group (the traces NaN-separated), so the
        cost does not grow with the number of ROIs; at most MAX_TRACES are drawn."""
        widths = {v.size for v in self.data.dff}
        if len(widths) != 1:
            return  # a rejected frame's row in view; draw next time
        dff = np.stack(self.data.dff)
        cols = self.bci if self.bci is not None and dff.shape[1] > int(self.bci.max(initial=-1)) else None
        cols = (cols if cols is not None else np.arange(dff.shape[1]))[:MAX_TRACES]
        dff = dff[:, cols]
        groups = [self.rois[int(k)].group for k in cols] if self.rois is not None and len(self.rois) > int(
            cols.max(initial=-1)) else ["none"] * len(cols)
        spacing = max(0.5, float(np.nanpercentile(dff, 99))) if np.isfinite(dff).any() else 1.0
        order = list(dict.fromkeys(groups))
        known = list(dict.fromkeys(self.rois.groups)) if self.rois is not None else order
        while len(self.dff_curves) < len(order):
            self.dff_curves.append(self.dff_plot.plot(connect="finite"))
        gap = np.array([np.nan])
        for curve, group in zip(self.dff_curves, order, strict=False):
            idx = [i for i, g in enumerate(groups) if g == group]
            xs = np.concatenate([np.concatenate([t, gap]) for _ in idx])
            ys = np.concatenate([np.concatenate([np.nan_to_num(dff[:, i]) + i * spacing, gap]) for i in idx])
            curve.setPen(pg.mkPen(group_colour(group, known)))
            curve.setData(xs, ys, connect="finite")
        self.dff_traces = len(cols)

    def _draw_image(self) -> None:
        d = self.data
        if d.image is None or d.image_frame == self._image_frame_drawn:
            return
        self._image_frame_drawn = d.image_frame
        levels = getattr(self, "levels", None)
        if levels is None:
            lo, hi = np.percentile(d.image, [1, 99.7])
            self.levels = levels = (float(lo), float(hi if hi > lo else lo + 1))
        self.image_item.setImage(d.image, levels=levels)
        rois = f" · {len(self.rois)} ROIs" if self.rois else ""
        self.image_title.setText(f"live image, frame {d.image_frame}{rois}")

    def _draw_feedback(self) -> None:
        d = self.data
        angle = "" if not math.isfinite(d.angle_deg) else f" {d.angle_deg:.0f}°"
        recent = d.last_reward_frame >= 0 and d.last_feedback_frame - d.last_reward_frame < self.rate
        reward = "   REWARD" if recent else ""
        self.feedback_label.setText(f"{d.phase} · trial {d.trial} · {d.state}\nscreen {d.screen}{angle} · sound "
                                    f"{d.sound}{reward}")
        key = (d.screen, d.angle_deg)
        old = self._shown_feedback
        if key[0] == old[0] and (key[1] == old[1] or not (math.isfinite(key[1]) or math.isfinite(old[1]))):
            return
        self._shown_feedback = key
        try:
            screen = Screen(d.screen)
        except ValueError:
            screen = Screen.GREY
        img = np.ascontiguousarray(screen_image(screen, d.angle_deg, 0.0, 72, 96, 24.0), dtype=np.uint8)
        qimg = QImage(img.tobytes(), 96, 72, 96, QImage.Format.Format_Grayscale8).copy()
        self.screen_swatch.setPixmap(QPixmap.fromImage(qimg))

    def _draw_trials(self) -> None:
        d = self.data
        if not d.outcomes:
            return
        trials = np.array([t for t, _ in d.outcomes], np.float64)
        brushes = [pg.mkBrush(OUTCOME_COLOURS.get(o, (255, 255, 255))) for _, o in d.outcomes]
        self.raster_dots.setData(trials, np.full(len(trials), -0.12), brush=brushes)
        self.rate_curve.setData(trials, d.running_hit_rate())
        self.raster_plot.setXRange(0.5, max(float(trials.max()), 1.0) + 0.5, padding=0)  # every trial in view

    def _draw_tables(self) -> None:
        lines = ["latency, last minute    n   median    p99 ms"]
        for stage, n, med, p99 in self.data.latency_rows():
            lines.append(f"{stage:<20}{n:6d} {med:8.2f} {p99:8.2f}" if n else f"{stage:<20}{0:6d}        —        —")
        self.latency_label.setText("\n".join(lines))
        rows = ["node        state      beat s   sent  recv  gaps  bad"]
        for name, state, age, c in self.data.health_rows():
            late = "  LATE" if age > 1.0 and state not in ("stopped", "failed") else ""
            rows.append(f"{name:<11} {state:<9} {age:6.1f} {c.get('sent', 0):6d} {c.get('received', 0):5d} "
                        f"{c.get('gaps', 0):5d} {c.get('wire_errors', 0):4d}{late}")
        s = self.data.source
        if s:
            rows.append(f"frames: dropped {s.get('dropped_frames', 0)}  malformed {s.get('malformed_frames', 0)}"
                        f"  late {s.get('late_frames', 0)}  bad {s.get('bad_frames', 0)}")
        self.health_label.setText("\n".join(rows))
