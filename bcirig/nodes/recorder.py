"""Recorder node: every data topic from every node goes into the session file (bcirig.recording)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bcirig.config import load_protocol, load_rig
from bcirig.messages import Heartbeat, Message, NodeState
from bcirig.nodes.base import Node, NodeSpec
from bcirig.recording import SessionWriter
from bcirig.setup import Setup


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

    def on_message(self, msg: Message) -> None:
        if isinstance(msg, Heartbeat):
            if msg.state in (NodeState.STOPPED, NodeState.FAILED):
                self.final[msg.src] = dict(msg.counters)
            return
        self.writer.write(msg)

    def on_tick(self, now: float) -> None:
        self.writer.maybe_flush()

    def on_fail(self) -> None:
        """Close the file with what it holds (complete stays false): nothing flushed is ever lost."""
        self.writer.abort()

    def on_stop(self) -> None:
        mine = {"received": self.sub.received, "gaps": self.sub.gaps, "wire_errors": len(self.sub.wire_errors)}
        mine.update({f"gaps_from_{k}": v for k, v in self.sub.gaps_by_src.items()})
        self.writer.write_node_counters({**self.final, "recorder": mine})
        self.writer.close()
