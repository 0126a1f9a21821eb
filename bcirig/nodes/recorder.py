"""Recorder node: every data topic from every node goes into the session file (bcirig.recording)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bcirig.config import load_protocol, load_rig
from bcirig.messages import Control, Heartbeat, Message, NodeState
from bcirig.nodes.base import Node, NodeSpec
from bcirig.recording import SessionWriter
from bcirig.setup import Setup
from bcirig.summary import session_summary

CONSOLE_SILENT_S = 3.0  # the console beats at 10 Hz (slower while it draws): this long without one, it is gone


class RecorderNode(Node):
    """Writes the session file; subscribes with an unbounded queue so it never drops data."""

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        protocol = load_protocol(spec.protocol_path)
        rig = load_rig(spec.rig_path)
        setup = Setup.load(spec.setup_path)
        img = protocol.imaging
        frames_path = Path(spec.setup_path).with_name("setup_frames.npy")
        setup_frames = np.load(frames_path, mmap_mode="r", allow_pickle=False) if frames_path.is_file() else None
        self.writer = SessionWriter(
            spec.session_path,
            protocol_text=protocol.source_text,
            rig_text=rig.source_text,
            rois=setup.rois,
            n_rois=setup.n_rois,
            reference=setup.reference,
            frame_shape=(img.planes, img.height, img.width),
            frame_dtype=img.dtype,
            record_frames=bool(spec.options.get("record_frames", protocol.recording.frames)),
            truth_fields=setup.truth_fields,
            attrs={"mode": spec.mode, "rig_name": rig.rig.name, "protocol_name": protocol.protocol.name,
                   "carried": spec.options.get("carried") or "{}", "seed": rig.source.seed,
                   "subject": spec.options.get("subject", "")},
            flush_interval_s=protocol.recording.flush_interval_s,
            setup_frames=setup_frames,
            setup_report=setup.report,
        )
        if setup_frames is not None:  # now in the session file, which is the record
            del setup_frames
            frames_path.unlink()
        self.final: dict[str, dict[str, int]] = {}
        self.heard_at: dict[str, float] = {}

    def on_start(self) -> None:
        now = time.monotonic()  # every upstream node beat during start-up (the runtime's handshake saw it)
        self.heard_at = {name: now for name in self.spec.upstream}

    def on_operator(self, msg: Control) -> None:
        # each of the supervisor's operator broadcasts is an experimenter's request, recorded with its times
        self.writer.write_operator(msg.frame, msg.command_id, msg.command.value, msg.value, msg.reason,
                                   {**msg.t_ns, "recorded": time.monotonic_ns()})
        self.counters["operator_requests"] = self.counters.get("operator_requests", 0) + 1

    def on_message(self, msg: Message) -> None:
        if isinstance(msg, Heartbeat):
            self.heard_at[msg.src] = time.monotonic()
            if msg.state in (NodeState.STOPPED, NodeState.FAILED):
                self.final[msg.src] = dict(msg.counters)
            return
        if isinstance(msg, Control):
            return  # the runtime passes none on; operator requests arrive in on_operator
        self.writer.write(msg)

    def on_tick(self, now: float) -> None:
        self.writer.maybe_flush()
        # a console that was closed, crashed or hangs must not hold up the file: drain without it
        if (self.stopping and "console" in self.spec.drain_from and "console" not in self.stopped_peers
                and now - self.heard_at.get("console", 0.0) > CONSOLE_SILENT_S):
            self.stopped_peers.add("console")

    def on_fail(self) -> None:
        """Close the file with what it holds (complete stays false): nothing flushed is ever lost."""
        self.writer.abort()

    def on_stop(self) -> None:
        mine = {"received": self.sub.received, "gaps": self.sub.gaps, "wire_errors": len(self.sub.wire_errors)}
        mine.update({f"gaps_from_{k}": v for k, v in self.sub.gaps_by_src.items()})
        self.writer.write_node_counters({**self.final, "recorder": mine})
        self.writer.close(summarize=session_summary)  # the session's summary is the recorder's to write
