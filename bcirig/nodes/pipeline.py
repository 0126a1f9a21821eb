"""Pipeline node: frames in from the rig's frame source, readouts out.

The frame source runs in this process (ARCHITECTURE.md, "Frames in"): a frame goes from the socket,
file or simulator straight into the pipeline, without a process hop (a hop cost 0.8 ms for a 512 x 512
uint16 frame, more than registering it). The science is in the stages this node calls in order:
:class:`~bcirig.acquisition.FrameAssembler` (checks, drop counts, planes -> volume), then
:class:`~bcirig.processing.Pipeline` (volume -> readout). The node only wires them:

* a **free-running** source (a microscope) is read whenever its file descriptors are readable, or
  every ``poll_interval_s`` when it has none;
* a **paced** source (the simulated microscope) is read on a schedule: at ``start + i / frame_rate`` in
  realtime mode, or, in lockstep, as soon as the task's feedback on the previous frame has arrived, so
  the run is deterministic and as fast as the machine allows;
* a source that closes the loop itself (:class:`~bcirig.acquisition.ClosedLoop`) is handed every
  feedback message, and its lick contacts are published as events for the rig's lick sensor.

Each volume's readout is published first (it is what the task waits for), then the frame itself, with
the microscope's index, timestamp, drops and rejections, for the recorder.
"""

from __future__ import annotations

import time
from typing import Any

from bcirig.acquisition import ClosedLoop, FrameSource
from bcirig.acquisition.assembler import FrameAssembler, Volume
from bcirig.acquisition.factory import make_source
from bcirig.config import load_protocol, load_rig
from bcirig.messages import Event, EventKind, Feedback, Frame, Message, Phase
from bcirig.modes import RunMode
from bcirig.nodes.base import Node, NodeSpec
from bcirig.processing import Pipeline, RoiSet
from bcirig.setup import Setup


class PipelineNode(Node):
    """Acquires frames from the rig's source, runs the processing pipeline, publishes readouts and frames."""

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        protocol = load_protocol(spec.protocol_path)
        rig = load_rig(spec.rig_path)
        setup = Setup.load(spec.setup_path)
        self.pipeline = Pipeline(protocol, RoiSet.from_arrays(setup.rois), setup.reference)
        self.assembler = FrameAssembler(protocol.imaging)
        self.source: FrameSource = make_source(protocol, rig, day=int(spec.options.get("day", 1)),
                                               skip=int(spec.options.get("skip", 0)))
        self.closed_loop = self.source if isinstance(self.source, ClosedLoop) else None
        if spec.mode == RunMode.LOCKSTEP and not self.source.paced:
            raise ValueError(f"lockstep mode needs a paced source (the simulator); the rig's source "
                             f"'{rig.source.kind}' runs free: use --mode realtime")
        self.source.open()
        self.period = 1.0 / protocol.imaging.frame_rate_hz
        self.lockstep = spec.mode == RunMode.LOCKSTEP
        self.awaiting = False  # lockstep: waiting for the verdict on the last frame
        self.awaiting_since = 0.0
        self.verdict_timeout_s = max(10.0, 10 * protocol.safety.frame_timeout_ms / 1000)
        self.finished = False
        self.t0 = 0.0
        self.reads = 0  # paced reads made (realtime schedule)
        self.late = 0
        self.last_fds: list[Any] = []
        self.link = (0, 0)  # (disconnects, reconnects) last reported

    # ------------------------------------------------------------------ node hooks
    def on_start(self) -> None:
        self.t0 = time.monotonic()

    def extra_poll(self) -> list[Any]:
        self.last_fds = list(self.source.poll_fds())
        return self.last_fds

    def next_wakeup(self, now: float) -> float:
        if self.finished or self.stopping:
            return now + 0.1
        if not self.source.paced:
            return now + (0.1 if self.last_fds else self.source.poll_interval_s)
        if self.lockstep:
            return now if not self.awaiting else now + 0.1
        return self.t0 + self.reads * self.period

    def on_message(self, msg: Message) -> None:
        if isinstance(msg, Feedback):
            if msg.phase in (Phase.DONE, Phase.SAFE):  # the task's last verdict: no frame after it
                self.finished = True
            if self.closed_loop is not None:
                self.closed_loop.sense(msg)
            if self.lockstep and msg.frame == self.assembler.frames - 1:
                self.awaiting = False
        elif isinstance(msg, Event) and msg.name in (EventKind.SESSION_END, EventKind.SAFE_STATE):
            self.finished = True

    def on_tick(self, now: float) -> None:
        if self.finished or self.stopping:
            return
        if not self.source.paced:
            self._acquire()
            self._refresh_fds()
        elif self.lockstep:
            if not self.awaiting:
                self.awaiting = self._acquire() > 0  # a rejected image: read the next one at once
                self.awaiting_since = now
            elif now - self.awaiting_since > self.verdict_timeout_s:
                raise RuntimeError(f"lockstep: no feedback from the task on frame {self.assembler.frames - 1} "
                                   f"within {self.verdict_timeout_s:.0f} s (frames or readouts lost?)")
        elif now >= self.t0 + self.reads * self.period:
            if now - (self.t0 + self.reads * self.period) > self.period:
                self.late += 1
            self.reads += 1
            self._acquire()

    def on_stop(self) -> None:
        self.source.close()

    # ------------------------------------------------------------------ wiring
    def _refresh_fds(self) -> None:
        """A source's sockets change when a sender reconnects: keep the poller's set current."""
        fds = list(self.source.poll_fds())
        if fds != self.last_fds:
            for fd in self.last_fds:
                self.poller.unregister(fd)
            for fd in fds:
                self.poller.register(fd, 1)  # zmq.POLLIN
            self.last_fds = fds

    def _acquire(self) -> int:
        """Read what the source has, process every completed volume; returns the number of volumes."""
        volumes = 0
        for raw in self.source.read():
            volume = self.assembler.push(raw)
            if volume is not None:
                self._process(volume)
                volumes += 1
        if self.closed_loop is not None:
            for contact in self.closed_loop.take_contacts():  # the simulated tongue on the rig's lick sensor
                self.pub.publish(Event(frame=contact.frame, name=EventKind.LICK_CONTACT,
                                       data={"count": contact.count}), stamp="sent")
        stats = self.source.stats
        if (stats.disconnects, stats.reconnects) != self.link:  # a sender left or came back: into the events
            self.link = (stats.disconnects, stats.reconnects)
            self.pub.publish(Event(frame=self.assembler.frames, name=EventKind.SOURCE_LINK,
                                   data={"disconnects": stats.disconnects, "reconnects": stats.reconnects,
                                         "last_error": stats.last_error}), stamp="sent")
        self.counters.update(self.assembler.counters())
        self.counters.update(self.source.stats.as_counters())
        self.counters["late_frames"] = self.late
        self.counters["bad_frames"] = self.pipeline.bad_frames
        return volumes

    def _process(self, v: Volume) -> None:
        readout = self.pipeline.process(v.data, v.frame, v.t_arrive_ns)
        readout.t_ns = {"source": v.t_arrive_ns, **readout.t_ns}
        self.pub.publish(readout, stamp="published")
        self.pub.publish(Frame(frame=v.frame, data=v.data, acq_index=v.acq_index, t_acq_ns=v.t_acq_ns,
                               dropped=v.dropped, malformed=v.malformed, truth=v.truth,
                               t_ns={"source": v.t_arrive_ns}))
