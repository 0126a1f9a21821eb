"""The OpenGL display under a real X server (Xvfb, Mesa llvmpipe): what the shader draws, read back from pixels.

The window is rendered in a child process started with the Xvfb display: a process makes its Qt
application once, with the platform it found, and OpenGL needs the X display to be there first (the
parent pytest process may already hold an offscreen application from another test). The child draws
each scene with the same code ``present()`` swaps, reads it back from a framebuffer object
(``screenshot()``) and saves the images; the tests measure them.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bcirig.gui.grating import GratingSettings, dominant_frequency
from bcirig.gui.photodiode import LEVELS, measure_patch, read_code
from bcirig.gui.xvfb import Xvfb, XvfbError
from tests.conftest import ROOT

ANGLES = (0.0, 30.0, 45.0, 90.0, 135.0)
SIZE = (320, 240)
SETTINGS = GratingSettings(spatial_freq_cpd=0.1, temporal_freq_hz=2.0, contrast=1.0, width_cm=52.0,
                           distance_cm=20.0, patch_corner="bottom_left", patch_px=24, swap_interval=1)
# A sequence of feedback (screen, angle) per frame; repeats are not changes
SEQUENCE = [("grating", 30.0), ("grating", 30.0), ("grating", 45.0), ("black", float("nan")), ("grey", float("nan")),
            ("grating", 90.0), ("grating", 90.0), ("grey", float("nan")), ("grating", 135.0), ("black", float("nan"))]


def render_scenes(out: str) -> None:
    """Child process: draw every scene the tests measure; save the screenshots and the records."""
    from dataclasses import replace

    from bcirig.gui.display import application, open_display
    from bcirig.gui.presenter import DisplayPresenter, ScreenState
    from bcirig.messages import Feedback, Screen

    application()
    win, line = open_display(SETTINGS, size=SIZE, allow_fallback=False)
    shots: dict[str, np.ndarray] = {}
    for angle in ANGLES:
        win.set_state(ScreenState(Screen.GRATING, angle), 0)
        win.present()
        shots[f"angle_{angle:g}"] = win.screenshot()
    win.set_state(ScreenState(Screen.GREY), 0)
    shots["grey"] = win.screenshot()
    win.set_state(ScreenState(Screen.BLACK), 0)
    shots["black"] = win.screenshot()
    win.set_state(ScreenState(Screen.GRATING, 0.0), 0)
    shots["drift_0"] = win.screenshot()
    win.advance(0.125)  # a quarter of the 2 Hz drift's period
    shots["drift_quarter"] = win.screenshot()
    win.close_window()
    half = open_display(replace(SETTINGS, contrast=0.5), size=SIZE, allow_fallback=False)[0]
    half.set_state(ScreenState(Screen.GRATING, 45.0), 0)
    shots["contrast_half"] = half.screenshot()
    half.close_window()
    # the photodiode code through the presenter, as the display node drives it
    seq = open_display(SETTINGS, size=SIZE, allow_fallback=False)[0]
    presenter = DisplayPresenter()
    records: list[dict[str, Any]] = []
    for frame, (screen, angle) in enumerate(SEQUENCE):
        if presenter.feedback(Feedback(frame=frame, screen=Screen(screen), angle_deg=angle), frame):
            seq.set_state(presenter.target, presenter.draw_code)
            shot = seq.screenshot()
            t_ns = seq.present()
            rec = presenter.presented(t_ns, seq.clock)
            assert rec is not None
            shots[f"seq_{len(records)}"] = shot
            records.append({"frame": rec.frame, "code": rec.code, "what": rec.what.value, "clock": rec.clock.value})
    seq.close_window()
    np.savez(out, allow_pickle=False, **shots)
    Path(out).with_suffix(".json").write_text(json.dumps({"line": line, "records": records}))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    out = tmp_path_factory.mktemp("gl") / "scenes.npz"
    try:
        server = Xvfb(640, 480)
        display = server.start()
    except XvfbError as exc:  # pragma: no cover - only where Xvfb is not installed
        pytest.skip(str(exc))
    try:
        env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "offscreen"}
        code = f"from tests.gui.test_display_gl import render_scenes; render_scenes({str(out)!r})"
        run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120)
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr[-2000:]
    with np.load(out) as npz:
        shots = {k: npz[k] for k in npz.files}
    return shots, json.loads(out.with_suffix(".json").read_text())


def _angle_error(measured: float, asked: float) -> float:
    return abs((measured - asked + 90.0) % 180.0 - 90.0)


def test_the_display_draws_with_opengl_under_xvfb(scenes: tuple[dict[str, np.ndarray], dict[str, Any]]) -> None:
    _, meta = scenes
    assert meta["line"].startswith("display: OpenGL (") and "swap interval" in meta["line"]
    assert {r["clock"] for r in meta["records"]} == {"swap"}


@pytest.mark.parametrize("angle", ANGLES)
def test_grating_orientation_and_spatial_frequency_read_back_by_fft(
        scenes: tuple[dict[str, np.ndarray], dict[str, Any]], angle: float) -> None:
    shot = scenes[0][f"angle_{angle:g}"]
    assert shot.shape == (SIZE[1], SIZE[0])
    body = shot[: SIZE[1] - SETTINGS.patch_px - 1]  # above the bottom-left patch
    measured, cycles_per_px = dominant_frequency(body)
    assert _angle_error(measured, angle) < 2.0, f"asked {angle}, measured {measured:.2f} deg"
    period = SETTINGS.period_px(SIZE[0])  # 0.1 cycles/deg, 52 cm wide at 20 cm: 21.5 px on a 320 px window
    assert cycles_per_px == pytest.approx(1 / period, rel=0.03)
    assert abs(float(body.mean()) - 128) < 3  # mean luminance is the grey screen's
    assert body.min() <= 3 and body.max() >= 252  # full contrast


def test_contrast_scales_the_grating_around_grey(scenes: tuple[dict[str, np.ndarray], dict[str, Any]]) -> None:
    shots = scenes[0]
    full, half = shots["angle_45"][:200], shots["contrast_half"][:200]
    expected_full = 127 / math.sqrt(2)  # a sine's standard deviation: amplitude / sqrt 2
    assert float(full.std()) == pytest.approx(expected_full, rel=0.03)
    assert float(half.std()) == pytest.approx(expected_full / 2, rel=0.03)
    assert abs(float(half.mean()) - 128) < 2


def test_grey_and_black_screens_by_pixel_statistics(scenes: tuple[dict[str, np.ndarray], dict[str, Any]]) -> None:
    grey, black = scenes[0]["grey"][:200], scenes[0]["black"][:200]
    assert abs(float(grey.mean()) - 128) <= 0.5 and float(grey.std()) < 0.5
    assert float(black.mean()) < 0.5 and float(black.std()) < 0.5


def test_the_grating_drifts_along_its_normal(scenes: tuple[dict[str, np.ndarray], dict[str, Any]]) -> None:
    a, b = scenes[0]["drift_0"], scenes[0]["drift_quarter"]
    period = SETTINGS.period_px(SIZE[0])
    x = np.arange(SIZE[0])
    row_a, row_b = a[100].astype(float) - 128, b[100].astype(float) - 128
    basis = np.exp(-2j * np.pi * x / period)
    shift = np.angle(np.sum(row_b * basis) / np.sum(row_a * basis))
    # a quarter period later, sin(k x - phase) has moved a quarter period toward +x: its phase by -pi/2
    assert shift == pytest.approx(-np.pi / 2, abs=0.1)


def test_photodiode_patch_code_read_back_for_a_sequence_of_changes(
        scenes: tuple[dict[str, np.ndarray], dict[str, Any]]) -> None:
    shots, meta = scenes
    records = meta["records"]
    changed, shown = [], ("grey", float("nan"))  # the display opens grey
    for i, (screen, angle) in enumerate(SEQUENCE):
        if screen != shown[0] or (screen == "grating" and angle != shown[1]):
            changed.append(i)
        shown = (screen, angle)
    assert [r["frame"] for r in records] == changed  # one presentation per change, none for a repeat
    read = [read_code(measure_patch(shots[f"seq_{i}"], "bottom_left", SETTINGS.patch_px)) for i in range(len(records))]
    assert read == [r["code"] for r in records] == [(i + 1) % len(LEVELS) for i in range(len(records))]
    for i in range(len(records)):  # the patch is flat: one level, exactly
        left, top = 1, SIZE[1] - SETTINGS.patch_px + 1
        patch = shots[f"seq_{i}"][top: top + SETTINGS.patch_px - 2, left: left + SETTINGS.patch_px - 2]
        assert patch.std() == 0 and int(patch[0, 0]) == LEVELS[read[i]]
