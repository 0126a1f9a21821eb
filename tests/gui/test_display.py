"""The mouse's display: the grating's orientation read back from pixels, in the array and in a Qt window."""

import numpy as np
import pytest

from bcirig.gui import dominant_orientation, grating_image, screen_image
from bcirig.messages import Screen


@pytest.mark.parametrize("angle", [0.0, 15.0, 45.0, 60.0, 90.0, 135.0])
def test_grating_orientation_is_the_commanded_angle(angle):
    img = grating_image(angle, 0.0, 256, 256, period_px=16.0)
    assert abs((dominant_orientation(img) - angle + 90) % 180 - 90) < 4.0
    assert abs(float(img.mean()) - 128) < 3  # mean luminance is the grey screen's


def test_grey_and_black_screens_are_uniform():
    assert np.all(screen_image(Screen.GREY, float("nan"), 0.0, 10, 20) == 128)
    assert np.all(screen_image(Screen.BLACK, 30.0, 0.0, 10, 20) == 0)


def test_drift_moves_the_bars_along_the_normal():
    a = grating_image(0.0, 0.0, 8, 64, period_px=16.0)
    b = grating_image(0.0, np.pi / 2, 8, 64, period_px=16.0)  # a quarter period
    # phase added to the argument: the pattern at x shows up at x - period/4
    np.testing.assert_allclose(a[:, 8:40].astype(int), b[:, 4:36].astype(int), atol=2)


def test_qt_window_shows_the_commanded_grating_then_grey():
    from bcirig.gui.display import FeedbackWindow, application, grab_gray

    app = application()
    w = FeedbackWindow(size=(320, 240), period_px=48.0)
    w.show()
    w.show_feedback(Screen.GRATING, 60.0)
    app.processEvents()
    shot = grab_gray(w)
    assert shot.shape == (240, 320)
    assert abs((dominant_orientation(shot) - 60.0 + 90) % 180 - 90) < 6.0
    assert shot.std() > 40  # full-contrast grating, not a flat screen
    w.show_feedback(Screen.GREY, float("nan"))
    app.processEvents()
    grey = grab_gray(w)
    assert abs(int(np.median(grey)) - 128) <= 1 and grey.std() < 1
    w.close()


def test_console_shows_counts_and_the_readout_above_baseline_minimum():
    from bcirig.gui.console import Console
    from bcirig.gui.display import application
    from bcirig.messages import Event, EventKind, Readout

    app = application()
    c = Console(title="t", frame_rate_hz=10.0)
    c.on_event(Event(frame=9, name=EventKind.CALIBRATION, data={"baseline_min": 0.25, "threshold": 0.5}))
    for i in range(20):
        c.on_readout(Readout(frame=i, readout=0.25 + 0.05 * i, dff=np.array([0.1 * i, -0.1 * i], np.float32)))
    c.on_event(Event(frame=15, name=EventKind.TRIAL_END, data={"outcome": "hit"}))
    c.on_event(Event(frame=19, name=EventKind.TRIAL_END, data={"outcome": "timeout"}))
    c.refresh()
    app.processEvents()
    x, y = c.readout_curve.getData()
    np.testing.assert_allclose(x, np.arange(20) / 10.0)
    np.testing.assert_allclose(y, 0.05 * np.arange(20), atol=1e-9)
    assert c.threshold_line.value() == 0.5
    assert len(c.dff_curves) == 2
    assert "done 2   hits 1" in c.status.text() and "hit rate 50%" in c.status.text()
    c.on_source_counters({"dropped_frames": 7, "malformed_frames": 2, "source_malformed": 1, "source_reconnects": 1})
    c.refresh()
    assert "microscope frames dropped 7   rejected 2   unreadable input 1   reconnects 1" in c.status.text()
    c.close()
