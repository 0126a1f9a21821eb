"""Where the synthesised samples go: a sound card (sounddevice / PortAudio) or a buffer (no device).

Why sounddevice and not Qt Multimedia: PortAudio's callback hands each block's *output-buffer DAC
time* (when its first sample reaches the converter), which is exactly the presentation time to
record; Qt's ``QAudioSink`` reports only bytes processed, and would tie the sound node to a Qt event
loop it does not otherwise need. PortAudio (``libportaudio2``) is a system library on every platform
a rig runs.

Both outputs take changes (``Presentation`` records from :class:`bcirig.gui.audio.SoundPresenter`)
and return them with ``sample`` (the change's first sample in the output stream) and
``t_presented_ns`` filled in.

- :class:`DeviceOutput`: the PortAudio callback (its own thread) applies pending changes to the synth
  at the start of a block, renders it, and stamps the changes with the block's DAC time put on
  ``time.monotonic_ns()`` (``PresentClock.DAC``), or the callback's time when the host API gives no
  DAC time (``PresentClock.CALLBACK``, some ALSA/OSS drivers report 0).
- :class:`BufferOutput`: frame-locked, for simulated rigs and headless runs: each feedback frame
  renders ``sample_rate / frame_rate`` samples, so the sound of a lockstep session (faster than real
  time) is the one the mouse would have heard; written to a 16-bit WAV file if one is named
  (``PresentClock.BUFFER``: the time the block was rendered).
"""

from __future__ import annotations

import math
import queue
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

from bcirig.gui.audio import AudioSynth, SoundPresenter
from bcirig.messages import Presentation, PresentClock


class AudioDeviceError(RuntimeError):
    """No usable audio output (no device of that name, no output channels, PortAudio missing)."""


def find_output_device(device: str) -> tuple[int, str]:
    """(index, name) of the output device named ``device`` (a name, part of one, or an index; '' = default).

    Raises AudioDeviceError naming what was looked for and what there is.
    """
    try:
        import sounddevice as sd
    except (ImportError, OSError) as exc:  # OSError: the PortAudio library is missing
        raise AudioDeviceError(f"sounddevice (PortAudio) cannot be loaded: {exc}") from None
    devices = list(sd.query_devices())
    outputs = [(i, d["name"]) for i, d in enumerate(devices) if d.get("max_output_channels", 0) > 0]
    listed = "; ".join(f"{i}: {n}" for i, n in outputs) or "none"
    if device == "":
        default = sd.default.device[1] if isinstance(sd.default.device, list | tuple) else sd.default.device
        for i, n in outputs:
            if i == default:
                return i, n
        raise AudioDeviceError(f"no default audio output device (output devices: {listed})")
    if device.strip().isdigit():
        idx = int(device)
        for i, n in outputs:
            if i == idx:
                return i, n
        raise AudioDeviceError(f"no audio output device with index {idx} (output devices: {listed})")
    matches = [(i, n) for i, n in outputs if device.lower() in n.lower()]
    if not matches:
        raise AudioDeviceError(f"no audio output device named {device!r} (output devices: {listed})")
    return matches[0]


class BufferOutput:
    """Frame-locked rendering into a buffer (and a WAV file): the same samples a sound card would get."""

    clock = PresentClock.BUFFER

    def __init__(self, synth: AudioSynth, presenter: SoundPresenter, frame_rate_hz: float,
                 path: str | Path | None = None) -> None:
        self.synth, self.presenter = synth, presenter
        self.frame_rate = frame_rate_hz
        self.frames = 0
        self.wav: wave.Wave_write | None = None
        if path:
            self.wav = wave.open(str(path), "wb")  # noqa: SIM115 - open for the session, closed by close()
            self.wav.setnchannels(1)
            self.wav.setsampwidth(2)
            self.wav.setframerate(synth.rate)

    def frame(self, changes: list[Presentation]) -> list[Presentation]:
        """One feedback frame: apply its changes, render its samples; the changes come back stamped."""
        for change in changes:
            self.presenter.apply(change, self.synth)
            change.sample = self.synth.samples
            change.clock = self.clock
        self.frames += 1
        n = round(self.frames * self.synth.rate / self.frame_rate) - self.synth.samples
        block = self.synth.render(max(0, n))
        t_ns = time.monotonic_ns()
        for change in changes:
            change.t_presented_ns = t_ns
        if self.wav is not None:
            self.wav.writeframes(np.round(block * 32767).astype("<i2").tobytes())
        return changes

    def poll(self) -> list[Presentation]:
        """Changes presented since the last call (a buffer stamps them at once: none pending)."""
        return []

    def close(self) -> None:
        """Close the WAV file."""
        if self.wav is not None:
            self.wav.close()
            self.wav = None


class BlockFeeder:
    """One output block at a time, as a sound card's callback asks for it: the changes queued since the
    last block start with it, stamped with the block's DAC time put on ``time.monotonic_ns()``.

    Thread-safe by its queues: :meth:`queue` and :meth:`done` from the node's thread, :meth:`fill` from
    the audio thread (which alone touches the synth).
    """

    def __init__(self, synth: AudioSynth, presenter: SoundPresenter) -> None:
        self.synth, self.presenter = synth, presenter
        self.pending: queue.SimpleQueue[Presentation] = queue.SimpleQueue()  # node -> callback
        self.finished: queue.SimpleQueue[Presentation] = queue.SimpleQueue()  # callback -> node

    def queue(self, change: Presentation) -> None:
        """Play ``change`` from the next block."""
        self.pending.put(change)

    def fill(self, out: np.ndarray, now_ns: int, dac_s: float, current_s: float) -> None:
        """Render ``len(out)`` samples into ``out``; ``dac_s`` and ``current_s`` on PortAudio's stream clock.

        A host API that gives no DAC time (0) leaves the callback's own time (``PresentClock.CALLBACK``).
        """
        changes = []
        while True:
            try:
                change = self.pending.get_nowait()
            except queue.Empty:
                break
            self.presenter.apply(change, self.synth)
            change.sample = self.synth.samples
            changes.append(change)
        out[:] = self.synth.render(len(out))
        if dac_s > 0 and current_s > 0 and math.isfinite(dac_s - current_s):
            t_ns, clock = now_ns + round((dac_s - current_s) * 1e9), PresentClock.DAC
        else:
            t_ns, clock = now_ns, PresentClock.CALLBACK
        for change in changes:
            change.t_presented_ns, change.clock = t_ns, clock
            self.finished.put(change)

    def done(self) -> list[Presentation]:
        """Changes whose block has been filled since the last call."""
        out = []
        while True:
            try:
                out.append(self.finished.get_nowait())
            except queue.Empty:
                return out


class DeviceOutput:
    """A PortAudio output stream fed by a :class:`BlockFeeder` from its callback thread."""

    def __init__(self, synth: AudioSynth, presenter: SoundPresenter, *, device: str, latency: float,
                 block: int) -> None:
        import sounddevice as sd

        self.feeder = BlockFeeder(synth, presenter)
        self.index, self.name = find_output_device(device)
        self.underflows = 0
        self.stream = sd.OutputStream(samplerate=synth.rate, blocksize=block, device=self.index, channels=1,
                                      dtype="float32", latency=latency, callback=self._callback)
        self.stream.start()

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        now_ns = time.monotonic_ns()
        if status.output_underflow:
            self.underflows += 1
        self.feeder.fill(outdata[:, 0], now_ns, float(time_info.outputBufferDacTime), float(time_info.currentTime))

    def frame(self, changes: list[Presentation]) -> list[Presentation]:
        """Queue a frame's changes for the next block; they come back from :meth:`poll` once played."""
        for change in changes:
            self.feeder.queue(change)
        return []

    def poll(self) -> list[Presentation]:
        """Changes whose block has gone to the device since the last call."""
        return self.feeder.done()

    def close(self) -> None:
        """Stop and close the stream."""
        self.stream.stop()
        self.stream.close()
