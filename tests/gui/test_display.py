"""The mouse's display: the grating's orientation read back from pixels, in the array and in a Qt window."""

import numpy as np
import pytest

from bcirig.config import PatchCorner
from bcirig.gui import dominant_orientation, grating_image, screen_image
from bcirig.messages import Screen


@pytest.mark.parametrize("angle", [0.0, 15.0, 45.0, 60.0, 90.0, 135.0])
def test_grating_orientation_is_the_commanded_angle(angle: float) -> None:
    img = grating_image(angle, 0.0, 256, 256, period_px=16.0)
    assert abs((dominant_orientation(img) - angle + 90) % 180 - 90) < 4.0
    assert abs(float(img.mean()) - 128) < 3  # mean luminance is the grey screen's


def test_grey_and_black_screens_are_uniform() -> None:
    assert np.all(screen_image(Screen.GREY, float("nan"), 0.0, 10, 20) == 128)
    assert np.all(screen_image(Screen.BLACK, 30.0, 0.0, 10, 20) == 0)


def test_drift_moves_the_bars_along_the_normal() -> None:
    a = grating_image(0.0, 0.0, 8, 64, period_px=16.0)
    b = grating_image(0.0, np.pi / 2, 8, 64, period_px=16.0)  # a quarter period
    # phase added to the argument: the pattern at x shows up at x - period/4
    np.testing.assert_allclose(a[:, 8:40].astype(int), b[:, 4:36].astype(int), atol=2)


def test_qpainter_fallback_window_shows_the_grating_grey_and_the_patch_code() -> None:
    """The window used where there is no OpenGL: the same screen, read back from a real Qt screenshot."""
    from bcirig.gui.display import FeedbackWindow, application
    from bcirig.gui.grating import GratingSettings, dominant_frequency
    from bcirig.gui.photodiode import measure_patch, read_code
    from bcirig.gui.presenter import ScreenState

    app = application()
    settings = GratingSettings(spatial_freq_cpd=0.08, patch_corner=PatchCorner.TOP_RIGHT, patch_px=24)
    w = FeedbackWindow(settings, size=(320, 240))
    w.set_state(ScreenState(Screen.GRATING, 60.0), 3)
    w.present()
    app.processEvents()
    shot = w.screenshot()
    assert shot.shape == (240, 320)
    angle, cycles_per_px = dominant_frequency(shot[40:, :])  # below the patch
    assert abs((angle - 60.0 + 90) % 180 - 90) < 2.0
    assert cycles_per_px == pytest.approx(1 / settings.period_px(320), rel=0.05)
    assert shot[40:].std() > 40  # full-contrast grating, not a flat screen
    assert read_code(measure_patch(shot, "top_right", 24)) == 3
    w.set_state(ScreenState(Screen.GREY), 1)
    w.present()
    grey = w.screenshot()
    assert abs(float(np.median(grey[40:])) - 128) <= 1 and grey[40:].std() < 1
    assert read_code(measure_patch(grey, "top_right", 24)) == 1
    w.close_window()


def test_presenter_counts_changes_codes_and_what_was_replaced_before_a_swap() -> None:
    from bcirig.gui.presenter import DisplayPresenter
    from bcirig.messages import Feedback, PresentClock, Presented

    p = DisplayPresenter()
    assert not p.feedback(Feedback(frame=0, screen=Screen.GREY), 10)  # the display opens grey: no change
    assert p.feedback(Feedback(frame=1, screen=Screen.GRATING, angle_deg=30.0), 11)
    assert p.draw_code == 1
    first = p.presented(12, PresentClock.SWAP)
    assert first is not None and (first.frame, first.what, first.code, first.skipped) == (1, Presented.SCREEN, 1, 0)
    assert not p.feedback(Feedback(frame=2, screen=Screen.GRATING, angle_deg=30.0), 13)  # same grating: drift only
    p.feedback(Feedback(frame=3, screen=Screen.GRATING, angle_deg=45.0), 14)
    p.feedback(Feedback(frame=4, screen=Screen.BLACK, angle_deg=45.0), 15)  # replaces frame 3 before a swap
    rec = p.presented(16, PresentClock.SWAP)
    assert rec is not None and (rec.frame, rec.what, rec.screen, rec.code, rec.skipped) == (
        4, Presented.SCREEN, Screen.BLACK, 2, 1)
    assert np.isnan(rec.angle_deg) and rec.t_update_ns == 15 and rec.t_presented_ns == 16
    assert p.presented(17, PresentClock.SWAP) is None  # nothing new: no record
    assert p.changes == 3 == p.count + 1  # three asked for, two shown, one replaced


def test_console_shows_counts_and_the_readout_above_baseline_minimum() -> None:
    from bcirig.gui.console import Console
    from bcirig.gui.display import application
    from bcirig.messages import Event, EventKind, Outcome, Readout, TrialEnd

    app = application()
    c = Console(title="t", frame_rate_hz=10.0)
    c.on_event(Event(frame=9, name=EventKind.CALIBRATION, data={"baseline_min": 0.25, "threshold": 0.5}))
    for i in range(20):
        c.on_readout(Readout(frame=i, readout=0.25 + 0.05 * i, dff=np.array([0.1 * i, -0.1 * i], np.float32)))
    c.on_event(Event(frame=15, name=EventKind.TRIAL_END,
                     data=TrialEnd(Outcome.HIT, start_frame=0, frames=16).to_data()))
    c.on_event(Event(frame=19, name=EventKind.TRIAL_END,
                     data=TrialEnd(Outcome.TIMEOUT, start_frame=16, frames=4).to_data()))
    c.refresh()
    app.processEvents()
    x, y = c.readout_curve.getData()
    np.testing.assert_allclose(x, np.arange(20) / 10.0)
    np.testing.assert_allclose(y, 0.05 * np.arange(20), atol=1e-9)
    assert c.threshold_line.value() == 0.5
    assert c.dff_traces == 2  # one trace per ROI (drawn as one curve per group)
    assert "done 2   hits 1" in c.status.text() and "hit rate 50%" in c.status.text()
    c.on_source_counters({"dropped_frames": 7, "malformed_frames": 2, "source_malformed": 1, "source_reconnects": 1})
    c.refresh()
    assert "microscope frames dropped 7   rejected 2   unreadable input 1   reconnects 1" in c.status.text()
    c.close()


def test_a_change_back_to_the_shown_screen_after_an_unshown_one_is_still_presented() -> None:
    from bcirig.gui.presenter import DisplayPresenter
    from bcirig.messages import Feedback, PresentClock

    p = DisplayPresenter()  # shows grey
    p.feedback(Feedback(frame=1, screen=Screen.BLACK), 1)  # never shown ...
    assert p.feedback(Feedback(frame=2, screen=Screen.GREY), 2)  # ... replaced by grey, which is on the screen
    rec = p.presented(3, PresentClock.SWAP)
    assert rec is not None and (rec.frame, rec.screen, rec.skipped, rec.code) == (2, Screen.GREY, 1, 1)
    assert p.changes == 2 == p.count + rec.skipped  # every change asked for: a row, or counted in one
    assert not p.due and p.presented(4, PresentClock.SWAP) is None
