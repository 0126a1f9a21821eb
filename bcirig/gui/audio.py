"""What the mouse hears, as samples: tone feedback and the white-noise burst. A stage: no device, no clock.

:class:`AudioSynth` turns the task's per-frame sound state into float32 samples in [-1, 1], block by
block, identical whichever way they leave (a sound card through :mod:`sounddevice`, or a buffer/file):

- **Tone** (``set_tone(hz)``, NaN = off). A phase accumulator carries the sine's phase across blocks
  and across frequency changes, so a change of pitch (every frame, in tone feedback) never steps the
  waveform: the largest sample-to-sample step stays that of the highest frequency,
  ``2 pi f A / rate``. A new frequency applies from the next sample rendered. Onset and offset are
  raised-cosine ramps of ``RAMP_S`` (5 ms), so starting or stopping a tone does not click either.
- **White noise** (``noise(ms, dbfs)``): Gaussian samples at the given RMS level from the synth's own
  seeded generator (the same seed, the same noise), with the same ramps; it adds to a running tone.

Deterministic: the samples are a function of the seed and the sequence of calls. :func:`tone` and
:func:`white_noise` are the one-shot forms.
"""

from __future__ import annotations

import math

import numpy as np

from bcirig.messages import Feedback, Presentation, Presented, Sound

RAMP_S = 0.005


def dbfs(level_dbfs: float) -> float:
    """Amplitude (or RMS) for a level in dB relative to full scale."""
    return float(10.0 ** (level_dbfs / 20.0))


class AudioSynth:
    """Renders the tone and the noise burst into consecutive blocks of samples."""

    def __init__(self, sample_rate: int, *, seed: int = 0, tone_dbfs: float = -12.0) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample rate {sample_rate}: must be positive")
        self.rate = int(sample_rate)
        self.rng = np.random.default_rng(seed)
        self.tone_amp = dbfs(tone_dbfs)
        self.tone_hz = float("nan")  # what set_tone asked for; NaN = off
        self.phase = 0.0  # radians, carried across blocks and frequency changes
        self.freq = 0.0  # the frequency sounding (kept through the offset ramp)
        self.gain = 0.0  # the tone's envelope, 0..1, ramped
        self.noise_left = 0  # samples of the burst still to play
        self.noise_len = 0
        self.noise_rms = 0.0
        self.ramp = max(1, round(RAMP_S * self.rate))
        self.samples = 0  # samples rendered so far

    def set_tone(self, hz: float) -> None:
        """Play a tone at ``hz`` from the next sample (NaN, 0 or below: stop, with the offset ramp)."""
        if math.isfinite(hz) and hz > 0:
            if hz >= self.rate / 2:
                raise ValueError(f"tone {hz:.0f} Hz at or above the Nyquist frequency ({self.rate / 2:.0f} Hz)")
            self.tone_hz = float(hz)
            self.freq = float(hz)
        else:
            self.tone_hz = float("nan")

    def noise(self, duration_ms: float, level_dbfs: float) -> None:
        """Start a white-noise burst of ``duration_ms`` at ``level_dbfs`` RMS from the next sample."""
        self.noise_len = self.noise_left = max(1, round(duration_ms * self.rate / 1000.0))
        self.noise_rms = dbfs(level_dbfs)

    @property
    def silent(self) -> bool:
        """Nothing sounds and nothing is ramping."""
        return self.gain == 0.0 and not math.isfinite(self.tone_hz) and self.noise_left == 0

    def render(self, n: int) -> np.ndarray:
        """The next ``n`` samples (float32, mono)."""
        out = np.zeros(n, np.float64)
        target = 1.0 if math.isfinite(self.tone_hz) else 0.0
        if self.gain > 0.0 or target > 0.0:
            step = 1.0 / self.ramp
            # envelope: linear ramp of the gain toward the target, shaped by a raised cosine
            g = np.clip(self.gain + np.sign(target - self.gain) * step * np.arange(1, n + 1), 0.0, 1.0)
            envelope = 0.5 - 0.5 * np.cos(np.pi * g)
            w = 2 * math.pi * self.freq / self.rate
            phases = self.phase + w * np.arange(1, n + 1)
            out += self.tone_amp * envelope * np.sin(phases - w)  # sample i at phase + w * i
            self.phase = float(phases[-1] % (2 * math.pi))
            self.gain = float(g[-1])
        if self.noise_left > 0:
            m = min(n, self.noise_left)
            done = self.noise_len - self.noise_left  # samples of the burst already played
            idx = np.arange(done, done + m)
            ramp = np.minimum(1.0, np.minimum(idx + 1, self.noise_len - idx) / self.ramp)
            out[:m] += self.noise_rms * (0.5 - 0.5 * np.cos(np.pi * ramp)) * self.rng.standard_normal(m)
            self.noise_left -= m
        self.samples += n
        return np.clip(out, -1.0, 1.0).astype(np.float32)


def tone(hz: float, duration_s: float, sample_rate: int, *, level_dbfs: float = -12.0) -> np.ndarray:
    """A tone of ``duration_s`` with its onset ramp (one-shot :class:`AudioSynth`)."""
    synth = AudioSynth(sample_rate, tone_dbfs=level_dbfs)
    synth.set_tone(hz)
    return synth.render(round(duration_s * sample_rate))


def white_noise(duration_ms: float, sample_rate: int, *, level_dbfs: float = -12.0, seed: int = 0) -> np.ndarray:
    """A white-noise burst of ``duration_ms`` with its ramps (one-shot :class:`AudioSynth`)."""
    synth = AudioSynth(sample_rate, seed=seed)
    synth.noise(duration_ms, level_dbfs)
    return synth.render(synth.noise_left)


class SoundPresenter:
    """Which of the task's per-frame sound states are changes the speaker must present.

    A change is a white-noise cue (``Feedback.sound == WHITE_NOISE``: one burst per cue frame), or a
    tone that starts, changes pitch or stops (``Feedback.tone_hz``, NaN = no tone). Each change is
    applied to the :class:`AudioSynth` by :meth:`apply` and comes back as a ``Presentation`` once the
    output says when its first sample played.
    """

    def __init__(self, noise_ms: float, noise_dbfs: float) -> None:
        self.noise_ms, self.noise_dbfs = noise_ms, noise_dbfs
        self.tone_hz = float("nan")

    def changes(self, fb: Feedback, t_update_ns: int) -> list[Presentation]:
        """The changes in one frame's feedback, as records still without their presentation time."""
        out = []
        hz = float(fb.tone_hz) if math.isfinite(fb.tone_hz) and fb.tone_hz > 0 else float("nan")
        if not (hz == self.tone_hz or (math.isnan(hz) and math.isnan(self.tone_hz))):
            self.tone_hz = hz
            out.append(Presentation(frame=fb.frame, what=Presented.TONE, sound=Sound.TONE if math.isfinite(hz)
                                    else Sound.NONE, tone_hz=hz, t_update_ns=t_update_ns))
        if fb.sound is Sound.WHITE_NOISE:
            out.append(Presentation(frame=fb.frame, what=Presented.SOUND, sound=Sound.WHITE_NOISE,
                                    tone_hz=self.tone_hz, t_update_ns=t_update_ns))
        return out

    def silence(self, frame: int, t_update_ns: int) -> list[Presentation]:
        """The tone stops (a safe stop); [] if none plays."""
        if math.isnan(self.tone_hz):
            return []
        self.tone_hz = float("nan")
        return [Presentation(frame=frame, what=Presented.TONE, sound=Sound.NONE, t_update_ns=t_update_ns)]

    def apply(self, change: Presentation, synth: AudioSynth) -> None:
        """Make ``synth`` play ``change`` from its next sample."""
        if change.what is Presented.TONE:
            synth.set_tone(change.tone_hz)
        elif change.sound is Sound.WHITE_NOISE:
            synth.noise(self.noise_ms, self.noise_dbfs)
