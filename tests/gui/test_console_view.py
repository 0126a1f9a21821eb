"""The console fed with a simulated stream, checked by screenshot: what the operator actually sees."""

from __future__ import annotations

import numpy as np
from PyQt6.QtCore import QPoint, QPointF
from PyQt6.QtGui import QImage

from bcirig.gui.console import GROUP_COLOURS, THRESHOLD_PEN, Console
from bcirig.gui.display import application
from bcirig.messages import (
    Event,
    EventKind,
    Feedback,
    Heartbeat,
    NodeState,
    Outcome,
    Phase,
    Readout,
    Screen,
    TrialEnd,
    TrialState,
)
from bcirig.processing.rois import Roi, RoiSet

H = W = 96
T0 = 10**12  # monotonic_ns stamps of a running machine
ROIS = RoiSet([
    Roi.disk("P+0", 0, (20.0, 20.0), 4.0, group="P+"), Roi.disk("P+1", 0, (20.0, 70.0), 4.0, group="P+"),
    Roi.disk("P-0", 0, (70.0, 30.0), 4.0, group="P-"), Roi.disk("P-1", 0, (60.0, 75.0), 4.0, group="P-"),
    Roi.disk("n0", 0, (45.0, 45.0), 4.0),
])


def rgb(img: QImage, p: QPoint) -> tuple[int, int, int]:
    """The screenshot's colour at widget point ``p``."""
    c = img.pixelColor(p)
    return c.red(), c.green(), c.blue()


def image_pixel_on_screen(c: Console, y: float, x: float) -> QPoint:
    """Where image pixel (y, x)'s centre is drawn, in the console's own coordinates."""
    scene = c.image_box.mapViewToScene(QPointF(x + 0.5, y + 0.5))
    point: QPoint = c.image_view.mapTo(c, c.image_view.mapFromScene(scene))
    return point


def fed_console() -> Console:
    """A console that has seen a set-up, a calibration, 120 frames and two trials."""
    application()
    c = Console(title="t", frame_rate_hz=30.0)
    rng = np.random.default_rng(0)
    reference = (100 + 20 * rng.standard_normal((1, H, W))).astype(np.float32)
    c.set_setup(ROIS, reference)
    c.on_event(Event(frame=0, name=EventKind.CALIBRATION, data={"baseline_min": 0.2, "threshold": 0.3}))
    for i in range(120):
        value = 0.2 + (0.1 if i < 60 else 0.4)  # readout - baseline minimum: 0.1, then 0.4
        t = T0 + 1_000_000 * i
        c.on_readout(Readout(frame=i, readout=value, dff=np.full(5, 0.01 * i, np.float32),
                             shift=np.array([0.5, -1.0], np.float32), corr=0.9,
                             t_ns={"source": t, "published": t + 2_000_000}))
        c.on_feedback(Feedback(frame=i, phase=Phase.CLOSED_LOOP, state=TrialState.ACTIVE, trial=3,
                               screen=Screen.GRATING, angle_deg=45.0, threshold=0.3,
                               t_ns={"source": t, "published": t + 2_000_000, "task_in": t + 2_500_000,
                                     "task_out": t + 2_600_000}))
    c.on_event(Event(frame=50, trial=1, name=EventKind.TRIAL_END,
                     data=TrialEnd(Outcome.HIT, start_frame=0, frames=51).to_data()))
    c.on_event(Event(frame=90, trial=2, name=EventKind.TRIAL_END,
                     data=TrialEnd(Outcome.ABORT, start_frame=51, frames=40).to_data()))
    c.on_heartbeat(Heartbeat(node="pipeline", state=NodeState.RUNNING, src="pipeline",
                             counters={"sent": 240, "gaps": 0, "dropped_frames": 3}))
    c.resize(1500, 950)
    c.show()
    c.refresh()
    application().processEvents()
    return c


def test_roi_outlines_are_drawn_in_their_group_colours_at_their_positions() -> None:
    c = fed_console()
    shot = c.grab().toImage()
    for roi in ROIS:
        cy, cx = roi.centroid_yx
        edge = rgb(shot, image_pixel_on_screen(c, cy, cx + 4))  # the disk's rightmost pixel: its outline
        inside = rgb(shot, image_pixel_on_screen(c, cy, cx))  # its centre: the image shows through
        want = GROUP_COLOURS[roi.group]
        assert max(abs(a - b) for a, b in zip(edge, want, strict=True)) <= 8, (roi.name, edge, want)
        assert max(abs(a - b) for a, b in zip(inside, want, strict=True)) > 40, (roi.name, inside)
    c.close()


def test_the_readout_and_the_threshold_are_plotted_where_their_values_are() -> None:
    c = fed_console()
    plot = c.readout_plot
    shot = plot.grab().toImage()
    vb = plot.plotItem.vb
    area = vb.sceneBoundingRect()
    top_left = plot.mapFromScene(area.topLeft())
    bottom_right = plot.mapFromScene(area.bottomRight())
    x0 = top_left.x() + int(0.75 * (bottom_right.x() - top_left.x()))  # the last quarter: readout 0.4

    def rows_of(colour: tuple[int, int, int], x: int) -> list[int]:
        return [y for y in range(top_left.y(), bottom_right.y())
                if max(abs(a - b) for a, b in zip(rgb(shot, QPoint(x, y)), colour, strict=True)) <= 10]

    def value_at(y: float) -> float:
        return float(vb.mapSceneToView(plot.mapToScene(QPoint(x0, round(y)))).y())

    white = rows_of((255, 255, 255), x0)
    orange = rows_of(THRESHOLD_PEN, x0)
    assert white and orange
    per_px = abs(value_at(top_left.y()) - value_at(bottom_right.y())) / (bottom_right.y() - top_left.y())
    assert abs(value_at(float(np.median(white))) - 0.4) <= 3 * per_px
    assert abs(value_at(float(np.median(orange))) - 0.3) <= 3 * per_px
    c.close()


def test_the_state_views_say_what_the_session_is_doing() -> None:
    c = fed_console()
    assert "done 2   hits 1" in c.status.text() and "hit rate 50%" in c.status.text()
    assert "closed_loop · trial 3 · active" in c.feedback_label.text() and "grating 45°" in c.feedback_label.text()
    latency = c.latency_label.text().splitlines()
    pipeline = next(line for line in latency if line.startswith("pipeline"))
    assert pipeline.split()[1:4] == ["120", "2.00", "2.00"]  # n, median, p99 ms: 2 ms stamped on every frame
    assert any(line.startswith("bus") and line.split()[2] == "0.50" for line in latency)
    assert "pipeline" in c.health_label.text() and "dropped 3" in c.health_label.text()
    x, y = c.rate_curve.getData()
    assert x is not None and y is not None
    np.testing.assert_allclose(y, [1.0, 0.5])  # running hit rate after trial 1 and 2
    assert c.dff_traces == 4 and len(c.dff_curves) == 2  # the BCI ROIs only (not the ungrouped n0), per group
    c.close()
