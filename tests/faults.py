"""Test-only faulty nodes, started by the supervisor in place of the real ones (node option ``node_class``).

Fault injection lives here, not in the production runtime: each class is the real node with one
failure added, at a given frame, the way a real node fails: an exception, a SIGKILL, or a hang in a
driver call (no heartbeat, no exit).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from bcirig.acquisition.assembler import Volume
from bcirig.messages import Message
from bcirig.nodes.pipeline import PipelineNode
from bcirig.nodes.recorder import RecorderNode
from bcirig.nodes.task import TaskNode


def fail(frame: int, at: int, how: str) -> None:
    """Fail as a real node would, once ``frame`` reaches ``at``."""
    if frame < at:
        return
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "hang":  # stuck in a driver call
        while True:
            time.sleep(3600)
    raise RuntimeError(f"injected failure at frame {frame}")


def crash(node: str, at: int, how: str = "raise") -> dict[str, dict[str, Any]]:
    """``node_options`` that make ``node`` fail at frame ``at`` (how: raise, kill, hang)."""
    cls = {"pipeline": "CrashingPipeline", "task": "CrashingTask", "recorder": "CrashingRecorder"}[node]
    return {node: {"node_class": f"tests.faults:{cls}", "crash_at_frame": at, "crash_how": how}}


class CrashingPipeline(PipelineNode):
    """The pipeline node, failing when it reaches frame ``crash_at_frame``."""

    def _process(self, v: Volume) -> None:
        fail(v.frame, int(self.spec.options["crash_at_frame"]), str(self.spec.options.get("crash_how", "raise")))
        super()._process(v)


class CrashingTask(TaskNode):
    """The task node, failing on the readout of frame ``crash_at_frame``."""

    def on_message(self, msg: Message) -> None:
        if msg.frame >= 0 and type(msg).__name__ == "Readout":
            fail(msg.frame, int(self.spec.options["crash_at_frame"]), str(self.spec.options.get("crash_how", "raise")))
        super().on_message(msg)


class FullDiskRecorder(RecorderNode):
    """The recorder on a disk that fills up: its process may write at most ``limit_bytes`` per file
    (RLIMIT_FSIZE, a stand-in for a full disk; SIGXFSZ ignored, so an oversized write fails as on a full
    disk instead of killing the process)."""

    def __init__(self, spec: Any) -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limit = int(spec.options["limit_bytes"])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        super().__init__(spec)


class CrashingRecorder(RecorderNode):
    """The recorder, failing on the first message of frame ``crash_at_frame``."""

    def on_message(self, msg: Message) -> None:
        if msg.frame >= 0:
            fail(msg.frame, int(self.spec.options["crash_at_frame"]), str(self.spec.options.get("crash_how", "raise")))
        super().on_message(msg)
