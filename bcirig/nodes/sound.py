"""Sound node: tone feedback and white-noise cues on the mouse's speaker, and when each one played.

Wiring only: :class:`bcirig.gui.audio.SoundPresenter` finds the changes in each frame's feedback,
:class:`bcirig.gui.audio.AudioSynth` makes the samples, and the rig's ``[sound] kind`` picks the output
(:mod:`bcirig.gui.audio_out`): a sound card through sounddevice, or a frame-locked buffer (and WAV
file) on simulated and headless rigs. Every presented change goes to the recorder as a
``Presentation`` (the change's first sample and its DAC, callback or render time).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bcirig.config import SoundKind, load_protocol, load_rig
from bcirig.gui.audio import AudioSynth, SoundPresenter
from bcirig.gui.audio_out import BufferOutput, DeviceOutput
from bcirig.messages import Feedback, LogLevel, Message, Presentation
from bcirig.nodes.base import Node, NodeSpec

POLL_S = 0.01  # a sound card's presentations are published within this of their block


class SoundNode(Node):
    """Plays what each frame's feedback says; silences the tone on SAFE."""

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        rig = load_rig(spec.rig_path)
        protocol = load_protocol(spec.protocol_path)
        cfg, fb = rig.sound, protocol.feedback
        self.synth = AudioSynth(cfg.sample_rate, seed=protocol.protocol.seed, tone_dbfs=fb.tone_level_dbfs)
        self.presenter = SoundPresenter(fb.noise_ms, fb.noise_level_dbfs)
        self.output: BufferOutput | DeviceOutput
        if cfg.kind is SoundKind.SOUNDDEVICE:
            self.output = DeviceOutput(self.synth, self.presenter, device=cfg.device, latency=cfg.latency,
                                       block=cfg.block)
            self.opened = f"sound: {self.output.name} (device {self.output.index}) at {cfg.sample_rate} Hz"
        else:
            path = Path(spec.session_path).parent / cfg.file if cfg.file else None
            self.output = BufferOutput(self.synth, self.presenter, protocol.imaging.frame_rate_hz, path)
            self.opened = (f"sound: rendered to a buffer at {cfg.sample_rate} Hz, one frame's samples per feedback"
                           + (f", written to {path}" if path else ""))
        print(self.opened, file=sys.stderr, flush=True)  # into the node's log
        self.last_frame = -1
        self.safe_state = False

    def on_start(self) -> None:
        self.log(LogLevel.INFO, self.opened)

    def next_wakeup(self, now: float) -> float:
        return now + POLL_S if isinstance(self.output, DeviceOutput) else super().next_wakeup(now)

    def _publish(self, done: list[Presentation]) -> None:
        for rec in done:
            self.pub.publish(rec)
        if done:
            self.counters["presentations"] = self.counters.get("presentations", 0) + len(done)

    def on_message(self, msg: Message) -> None:
        if isinstance(msg, Feedback):
            self.last_frame = msg.frame
            self.counters["feedback_heard"] = self.counters.get("feedback_heard", 0) + 1
            changes = [] if self.safe_state else self.presenter.changes(msg, time.monotonic_ns())
            self._publish(self.output.frame(changes))

    def on_tick(self, now: float) -> None:
        self._publish(self.output.poll())
        if isinstance(self.output, DeviceOutput):
            self.counters["underflows"] = self.output.underflows

    def on_safe(self, reason: str) -> None:
        self.safe_state = True  # a buffer renders one more frame: the tone's offset ramp
        self._publish(self.output.frame(self.presenter.silence(self.last_frame, time.monotonic_ns())))

    def on_stop(self) -> None:
        self._publish(self.output.poll())
        self.output.close()

    def on_fail(self) -> None:
        self.output.close()
