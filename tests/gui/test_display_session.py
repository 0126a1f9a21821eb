"""The display and sound nodes in a real lockstep session (supervisor, node processes, ZeroMQ, HDF5) under Xvfb.

What is checked is what a scientist would line up by hand: every feedback change the task asked for is
in the presentation table (presented, or counted as replaced before the display could swap), with the
screen and angle the feedback said, the photodiode code in sequence, times after the feedback's
arrival; every white-noise cue and tone change of the feedback is a sound row at its frame's sample,
and the WAV file holds that sound there.
"""

from __future__ import annotations

import math
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bcirig.gui.audio import dbfs
from bcirig.gui.xvfb import Xvfb, XvfbError
from bcirig.recording import SessionFile
from bcirig.supervisor import SessionResult, Supervisor
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

E2E = (ROOT / "tests" / "configs" / "e2e.toml").read_text()
RIG = """
[rig]
name = "sim-screen-speaker"
[source]
kind = "simulated"
seed = 1
[display]
kind = "qt"
patch_px = 16
[sound]
kind = "buffer"
sample_rate = 48000
file = "sound.wav"
"""
SAMPLES_PER_FRAME = 48000 // 30


@pytest.fixture(scope="module")
def xdisplay() -> Iterator[str]:
    try:
        with Xvfb(640, 480) as display:
            yield display
    except XvfbError as exc:  # pragma: no cover - only where Xvfb is not installed
        pytest.skip(str(exc))


def _run(tmp: Path, protocol: str, display: str) -> SessionResult:
    (tmp / "p.toml").write_text(protocol)
    (tmp / "rig.toml").write_text(RIG)
    mp = pytest.MonkeyPatch()
    mp.setenv("DISPLAY", display)  # the node processes inherit it: OpenGL through Xvfb
    try:
        result = Supervisor(tmp / "p.toml", tmp / "rig.toml", data_dir=tmp / "data", mode="lockstep",
                            node_options={"display": {"size": [160, 120]}}).run()
    finally:
        mp.undo()
    assert result.ok, result.error
    return result


@pytest.fixture(scope="module")
def grating_session(tmp_path_factory: pytest.TempPathFactory, xdisplay: str) -> SessionResult:
    return _run(tmp_path_factory.mktemp("grating"), E2E, xdisplay)


@pytest.fixture(scope="module")
def tone_session(tmp_path_factory: pytest.TempPathFactory, xdisplay: str) -> SessionResult:
    text = E2E.replace("[trials]\ncount = 4", "[trials]\ncount = 2") + '\n[feedback]\nkind = "tone"\n'
    return _run(tmp_path_factory.mktemp("tone"), text, xdisplay)


def _rows(table: dict[str, np.ndarray], device: str) -> dict[str, np.ndarray]:
    keep = table["device"] == device.encode()
    return {k: v[keep] for k, v in table.items()}


def _changes(fb: dict[str, np.ndarray]) -> list[int]:
    """Frames whose screen or grating angle differs from the frame before (the display opens grey)."""
    out, shown = [], (b"grey", math.nan)
    for i, (screen, angle) in enumerate(zip(fb["screen"], fb["angle_deg"], strict=True)):
        if screen != shown[0] or (screen == b"grating" and angle != shown[1]):
            out.append(i)
        shown = (screen, angle)
    return out


def _wav(result: SessionResult) -> np.ndarray:
    with wave.open(str(result.path.parent / "sound.wav"), "rb") as w:
        assert (w.getframerate(), w.getnchannels()) == (48000, 1)
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64) / 32767


def test_every_feedback_change_is_presented_or_counted_with_its_screen_and_code(grating_session: SessionResult) -> None:
    with SessionFile(grating_session.path) as sf:
        fb = sf.table("feedback")
        shown = _rows(sf.presentations(), "display")
    changes = _changes(fb)
    assert len(changes) > 10  # grey, gratings at several angles, black ITIs
    n = len(shown["frame"])
    assert n > 0 and set(shown["clock"]) == {b"swap"}  # drawn with OpenGL, timed after swapBuffers
    assert n + int(shown["skipped"].sum()) == len(changes)  # lockstep outruns any screen: some are replaced
    assert set(shown["frame"].tolist()) <= set(changes)
    frames = shown["frame"]
    assert (np.diff(frames) > 0).all()
    assert (shown["screen"] == fb["screen"][frames]).all()
    grating = shown["screen"] == b"grating"
    np.testing.assert_array_equal(shown["angle_deg"][grating], fb["angle_deg"][frames][grating])
    assert shown["code"].tolist() == [(i + 1) % 4 for i in range(n)]  # the patch's cycle, one step per swap
    assert (shown["t_presented_ns"] > shown["t_update_ns"]).all()
    task_out = fb["t_ns"][frames, -1]  # when the task published the feedback
    assert (shown["t_update_ns"] > task_out).all()


def test_every_white_noise_cue_is_a_sound_row_and_in_the_wav_at_its_frame(grating_session: SessionResult) -> None:
    with SessionFile(grating_session.path) as sf:
        fb = sf.table("feedback")
        heard = _rows(sf.presentations(), "sound")
    cues = np.flatnonzero(fb["sound"] == b"white_noise")
    assert len(cues) > 0
    assert heard["frame"].tolist() == cues.tolist() and set(heard["what"]) == {b"sound"}
    assert heard["sample"].tolist() == (cues * SAMPLES_PER_FRAME).tolist()  # frame-locked buffer
    pcm = _wav(grating_session)
    assert len(pcm) == len(fb["frame"]) * SAMPLES_PER_FRAME
    ramp = 48000 // 200  # 5 ms
    for start in heard["sample"]:
        burst = pcm[start + ramp : start + 24000 - ramp]  # the protocol's default 500 ms burst
        assert float(burst.std()) == pytest.approx(dbfs(-12.0), rel=0.05)
    assert np.abs(pcm[: heard["sample"][0]]).max() == 0  # silent before the first cue


def test_tone_feedback_follows_the_task_frame_by_frame(tone_session: SessionResult) -> None:
    with SessionFile(tone_session.path) as sf:
        fb = sf.table("feedback")
        heard = _rows(sf.presentations(), "sound")
    tones = heard["what"] == b"tone"
    rows = {int(f): float(hz) for f, hz in zip(heard["frame"][tones], heard["tone_hz"][tones], strict=True)}
    expected, playing = {}, math.nan
    for i, hz in enumerate(fb["tone_hz"]):
        hz = float(hz)
        if not (hz == playing or (math.isnan(hz) and math.isnan(playing))):
            expected[i] = hz
            playing = hz
    assert len(expected) > 20 and rows.keys() == expected.keys()
    np.testing.assert_allclose([rows[k] for k in expected], list(expected.values()), rtol=1e-6)
    finite = [hz for hz in expected.values() if math.isfinite(hz)]
    assert min(finite) >= 6000 - 1 and max(finite) <= 20000 + 1
    pcm = _wav(tone_session)
    steady = [f for f, hz in expected.items() if math.isfinite(hz) and f + 1 not in expected and f + 2 not in expected]
    assert steady  # frames where one pitch held for three frames: measure it in the middle frame
    for f in steady[:10]:
        seg = pcm[(f + 1) * SAMPLES_PER_FRAME : (f + 2) * SAMPLES_PER_FRAME]
        spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
        peak_hz = np.argmax(spec) * 48000 / len(seg)
        assert abs(peak_hz - expected[f]) <= 30  # 30 Hz bins: one frame of 48 kHz samples
