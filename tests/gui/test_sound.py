"""What the mouse hears: the rendered samples measured (FFT, band powers, steps), and the pre-flight refusal.

Tolerances, stated once: a tone's dominant frequency within 2 Hz of what was asked (0.5 s at 96 kHz:
2 Hz bins, peak refined by a parabola); the white noise's power density in each octave band from
125 Hz to 32 kHz within +-1.5 dB of their mean (Welch, 2 s); a pitch change moves the waveform by
no more than the highest frequency's own largest step, 2 pi f A / rate (no click).
"""

from __future__ import annotations

import itertools
import math
import wave
from pathlib import Path

import numpy as np
import pytest
from scipy import signal

from bcirig.config import ConfigError, parse_protocol, parse_rig
from bcirig.gui.audio import AudioSynth, SoundPresenter, dbfs, tone, white_noise
from bcirig.gui.audio_out import BufferOutput
from bcirig.messages import Feedback, PresentClock, Presented, Sound
from bcirig.preflight import check_session, sound_needs
from tests.conftest import protocol_text

RATE = 96000


def dominant_hz(x: np.ndarray, rate: int) -> float:
    """The strongest frequency of ``x`` (Hann window, parabola through the peak's neighbours)."""
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    i = int(np.argmax(spec))
    a, b, c = np.log(spec[i - 1 : i + 2])
    return float((i + 0.5 * (a - c) / (a - 2 * b + c)) * rate / len(x))


@pytest.mark.parametrize("hz", [6000.0, 12000.0, 20000.0])
def test_tone_dominant_frequency_and_level(hz: float) -> None:
    x = tone(hz, 0.5, RATE, level_dbfs=-12.0)
    assert len(x) == RATE // 2 and x.dtype == np.float32
    assert abs(dominant_hz(x, RATE) - hz) < 2.0
    steady = x[RATE // 100 :]  # after the 5 ms onset ramp
    assert float(np.sqrt(np.mean(steady.astype(np.float64) ** 2))) == pytest.approx(dbfs(-12.0) / math.sqrt(2),
                                                                                      rel=0.01)
    spec = np.abs(np.fft.rfft(steady * np.hanning(len(steady)))) ** 2
    f = np.fft.rfftfreq(len(steady), 1 / RATE)
    assert spec[np.abs(f - hz) < 50].sum() / spec.sum() > 0.999  # a pure tone: no harmonics, no noise


def test_white_noise_spectrum_is_flat_in_octave_bands() -> None:
    x = white_noise(2000.0, RATE, level_dbfs=-12.0, seed=5)
    assert float(x[RATE // 100 : -RATE // 100].std()) == pytest.approx(dbfs(-12.0), rel=0.02)
    f, pxx = signal.welch(x.astype(np.float64), RATE, nperseg=4096)
    edges = 125.0 * 2.0 ** np.arange(0, 9)  # 125 Hz ... 32 kHz
    bands = [float(pxx[(f >= lo) & (f < hi)].mean()) for lo, hi in itertools.pairwise(edges)]
    db = 10 * np.log10(np.array(bands))
    assert np.abs(db - db.mean()).max() < 1.5, db - db.mean()


def test_noise_is_deterministic_given_the_seed() -> None:
    a, b, c = (white_noise(50.0, RATE, seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1


def test_a_pitch_change_is_phase_continuous_no_click() -> None:
    synth = AudioSynth(RATE, tone_dbfs=-6.0)
    synth.set_tone(6000.0)
    parts = [synth.render(1000)]  # onset ramp
    parts.append(synth.render(777))  # a change lands mid-waveform, not at a zero crossing
    synth.set_tone(20000.0)
    parts.append(synth.render(3200))
    synth.set_tone(12000.0)
    parts.append(synth.render(3200))
    synth.set_tone(float("nan"))  # off, with the offset ramp
    parts.append(synth.render(2000))
    x = np.concatenate(parts).astype(np.float64)
    bound = 2 * math.pi * 20000.0 * dbfs(-6.0) / RATE  # the largest step a 20 kHz sine itself makes
    assert np.abs(np.diff(x)).max() <= bound * 1.001
    assert abs(x[0]) < 1e-3 and np.abs(x[-100:]).max() < 1e-6 and synth.silent  # ramped on, ramped off
    # the phase carries over: the samples after the change are the 20 kHz sine continuing from the 6 kHz one
    start = 1777
    phase0 = 2 * math.pi * 6000.0 * start / RATE
    expected = dbfs(-6.0) * np.sin(phase0 + 2 * math.pi * 20000.0 * np.arange(50) / RATE)
    np.testing.assert_allclose(x[start : start + 50], expected, atol=1e-6)


def test_buffer_output_is_frame_locked_and_stamps_each_change(tmp_path: Path) -> None:
    synth = AudioSynth(RATE, seed=0)
    presenter = SoundPresenter(noise_ms=100.0, noise_dbfs=-12.0)
    out = BufferOutput(synth, presenter, frame_rate_hz=30.0, path=tmp_path / "s.wav")
    records = []
    frames = [Feedback(frame=0), Feedback(frame=1, sound=Sound.TONE, tone_hz=8000.0),
              Feedback(frame=2, sound=Sound.TONE, tone_hz=8000.0),
              Feedback(frame=3, sound=Sound.TONE, tone_hz=16000.0),
              Feedback(frame=4), Feedback(frame=5, sound=Sound.WHITE_NOISE)] + [Feedback(frame=f) for f in range(6, 12)]
    for fb in frames:
        records += out.frame(presenter.changes(fb, 100 + fb.frame))
    out.close()
    assert [(r.frame, r.what) for r in records] == [(1, Presented.TONE), (3, Presented.TONE), (4, Presented.TONE),
                                                    (5, Presented.SOUND)]  # frame 2 repeats frame 1: no change
    assert [r.tone_hz for r in records[:2]] == [8000.0, 16000.0] and math.isnan(records[2].tone_hz)  # 4: tone off
    assert [r.sample for r in records] == [r.frame * RATE // 30 for r in records]  # 3200 samples per frame
    assert all(r.clock is PresentClock.BUFFER and r.t_presented_ns >= r.t_update_ns for r in records)
    with wave.open(str(tmp_path / "s.wav"), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) == (RATE, 1, 2, 12 * 3200)
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64) / 32767
    assert np.abs(pcm[:3200]).max() == 0  # frame 0: silence
    assert abs(dominant_hz(pcm[3200 + 480 : 9600], RATE) - 8000.0) < 30  # frames 1-2 (ramp skipped)
    assert abs(dominant_hz(pcm[9600:12800], RATE) - 16000.0) < 30  # frame 3
    burst = pcm[16000 + 480 : 16000 + 9600 - 480]  # frame 5's 100 ms burst, inside its ramps
    assert float(burst.std()) == pytest.approx(dbfs(-12.0), rel=0.05)
    assert np.abs(pcm[16000 + 9600 + 1 :]).max() == 0  # silent after the burst


QUIET_OUTCOMES = {"outcomes__abort": 'hold_frames = 5\niti_frames = 4\nsound = "none"',
                  "outcomes__timeout": "iti_frames = 7\nnoise_at_iti_frame = -1"}
TONE_PROTOCOL = protocol_text(feedback='kind = "tone"', **QUIET_OUTCOMES)
RIG_WITHOUT_SOUND = '[rig]\nname = "quiet"\n[source]\nkind = "network"\n'  # a live rig: no simulated mouse to check


def test_preflight_refuses_a_tone_protocol_on_a_rig_without_audio() -> None:
    protocol = parse_protocol(TONE_PROTOCOL, "tone.toml")
    rig = parse_rig(RIG_WITHOUT_SOUND, "quiet.toml")
    assert sound_needs(protocol) == ["feedback.kind = 'tone'"]
    with pytest.raises(ConfigError) as err:
        check_session(protocol, rig)
    assert str(err.value) == ("quiet.toml: sound.kind = 'none': expected 'sounddevice' (a sound card) or 'buffer' "
                              "(no speaker: samples rendered only): protocol 't' plays sound (feedback.kind = 'tone')")


def test_preflight_refuses_a_white_noise_cue_and_a_missing_sound_card() -> None:
    noisy = parse_protocol(protocol_text(), "noisy.toml")  # the default abort cue and a timeout noise
    assert sound_needs(noisy) == ["outcomes.abort.sound = 'white_noise'", "outcomes.timeout.noise_at_iti_frame = 2"]
    with pytest.raises(ConfigError, match=r"^quiet.toml: sound.kind = 'none': expected"):
        check_session(noisy, parse_rig(RIG_WITHOUT_SOUND, "quiet.toml"))
    card = parse_rig(RIG_WITHOUT_SOUND + '[sound]\nkind = "sounddevice"\ndevice = "no such card"\n', "card.toml")
    with pytest.raises(ConfigError) as err:  # no sound card on this machine, and none of that name anywhere
        check_session(noisy, card)
    assert str(err.value).startswith("card.toml: sound.device = 'no such card': expected an audio output device ")
    silent = parse_protocol(protocol_text(**QUIET_OUTCOMES), "s.toml")
    assert sound_needs(silent) == []
    check_session(silent, parse_rig(RIG_WITHOUT_SOUND, "quiet.toml"))  # a silent protocol needs no speaker


def test_preflight_refuses_tones_above_the_nyquist_frequency() -> None:
    rig = parse_rig(RIG_WITHOUT_SOUND + '[sound]\nkind = "buffer"\nsample_rate = 32000\n', "low.toml")
    with pytest.raises(ConfigError) as err:
        check_session(parse_protocol(TONE_PROTOCOL, "tone.toml"), rig)
    assert str(err.value) == ("low.toml: sound.sample_rate = 32000: expected more than twice feedback.tone_max_hz "
                              "(20000 Hz)")


def test_validate_refuses_the_tone_protocol_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bcirig.cli import main

    proto, rig = tmp_path / "tone.toml", tmp_path / "quiet.toml"
    proto.write_text(TONE_PROTOCOL)
    rig.write_text(RIG_WITHOUT_SOUND)
    assert main(["validate", str(proto), str(rig)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"bcirig: {rig}: sound.kind = 'none': expected 'sounddevice' (a sound card) or 'buffer' (no "
                   "speaker: samples rendered only): protocol 't' plays sound (feedback.kind = 'tone')"]


def test_sound_card_blocks_stamp_changes_with_the_dac_time() -> None:
    """The callback's work without a sound card (there is none here): PortAudio's block times are given."""
    from bcirig.gui.audio_out import BlockFeeder

    presenter = SoundPresenter(noise_ms=100.0, noise_dbfs=-12.0)
    feeder = BlockFeeder(AudioSynth(RATE, seed=3), presenter)
    twin = AudioSynth(RATE, seed=3)  # the same calls, rendered directly
    out = np.zeros(256, np.float32)
    feeder.fill(out, now_ns=1_000_000, dac_s=10.0, current_s=9.99)
    np.testing.assert_array_equal(out, twin.render(256))  # silence, and no change to stamp
    assert feeder.done() == []
    for change in presenter.changes(Feedback(frame=7, sound=Sound.WHITE_NOISE, tone_hz=9000.0), 5):
        feeder.queue(change)
    twin.set_tone(9000.0)
    twin.noise(100.0, -12.0)
    feeder.fill(out, now_ns=2_000_000, dac_s=10.5, current_s=10.488)  # this block reaches the DAC 12 ms later
    np.testing.assert_array_equal(out, twin.render(256))
    done = feeder.done()
    assert [(c.frame, c.what, c.sample, c.clock) for c in done] == [
        (7, Presented.TONE, 256, PresentClock.DAC), (7, Presented.SOUND, 256, PresentClock.DAC)]
    assert all(c.t_presented_ns == 2_000_000 + 12_000_000 for c in done)
    feeder.queue(presenter.changes(Feedback(frame=8), 6)[0])  # the tone stops
    feeder.fill(out, now_ns=3_000_000, dac_s=0.0, current_s=0.0)  # a host API without DAC times
    (stop,) = feeder.done()
    assert (stop.what, stop.clock, stop.t_presented_ns, stop.sample) == (Presented.TONE, PresentClock.CALLBACK,
                                                                           3_000_000, 512)
