"""Pipeline node: frame in, readout out. The science is in bcirig.processing.Pipeline."""

from __future__ import annotations

import time

from bcirig.config import load_protocol
from bcirig.messages import Frame, Message
from bcirig.nodes.base import Node, NodeSpec
from bcirig.processing import Pipeline, RoiSet
from bcirig.setup import Setup


class PipelineNode(Node):
    """Runs the processing pipeline on every frame and publishes the readout."""

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        setup = Setup.load(spec.setup_path)
        self.pipeline = Pipeline(load_protocol(spec.protocol_path), RoiSet.from_arrays(setup.rois), setup.reference)

    def on_message(self, msg: Message) -> None:
        if not isinstance(msg, Frame):
            return
        arrive = time.monotonic_ns()
        self.check_crash(msg.frame)
        readout = self.pipeline.process(msg.data, msg.frame, arrive)
        readout.t_ns = {"source": msg.t_ns.get("source", -1), **readout.t_ns}
        self.pub.publish(readout, stamp="published")
        self.counters["frames"] = self.counters.get("frames", 0) + 1
        self.counters["bad_frames"] = int(getattr(self.pipeline, "bad_frames", 0))
