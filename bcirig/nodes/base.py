"""The node runtime: one process wiring one stage to the bus. No scientific logic lives here.

Life of a node:

1. bind its PUB socket, connect its SUB socket to its upstream publishers and the supervisor;
2. publish STARTING heartbeats until a heartbeat has arrived from every publisher it listens to (then
   its subscriptions are live: ZeroMQ drops what is published before a subscription exists), then tell
   the supervisor READY over a DEALER socket;
3. on the supervisor's START, run: block on ``zmq.Poller`` with a real timeout (never spin), hand every
   message to :meth:`Node.on_message`, call :meth:`Node.on_tick` between messages;
4. on STOP, keep handling input until every node in ``drain_from`` has published its final STOPPED
   heartbeat (ZeroMQ keeps each publisher's messages in order, so nothing before it is lost), then
   publish its own STOPPED heartbeat with its counters and exit.

An exception anywhere is published as an error ``Log`` naming the node, :meth:`Node.on_fail` lets the
node leave its device or file safe (the valve closed, the session file closed), then the process exits
1; the supervisor turns that into the session's one-line failure message.

Every node watches its supervisor: if the supervisor's heartbeat stops for ``SUPERVISOR_TIMEOUT_S`` or
the node's parent process is gone (it was killed), the node goes safe (:meth:`Node.on_safe`) and stops
as on STOP, so nothing runs unsupervised. Nodes run in their own session (process group), so a
terminal's Ctrl-C or hangup reaches only the supervisor, which stops them in order.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import zmq

from bcirig.bus import Publisher, Subscriber
from bcirig.messages import Control, ControlAction, Heartbeat, Log, LogLevel, Message, NodeState, Topic
from bcirig.modes import RunMode

HEARTBEAT_S = 0.1
DRAIN_TIMEOUT_S = 5.0
SUPERVISOR_TIMEOUT_S = 3.0  # no heartbeat from the supervisor this long: it is gone; go safe and stop


@dataclass
class NodeSpec:
    """Everything a node process needs, JSON-serialisable (written to <run_dir>/<name>.json)."""

    name: str
    kind: str
    run_dir: str
    endpoints: dict[str, str]  # node name -> PUB endpoint (the supervisor's included)
    control: str  # supervisor ROUTER endpoint
    upstream: list[str]  # nodes whose PUB this node subscribes to
    topics: list[str]
    drain_from: list[str]
    protocol_path: str
    rig_path: str
    setup_path: str = ""
    session_path: str = ""
    mode: RunMode = RunMode.REALTIME
    options: dict[str, Any] = field(default_factory=dict)

    def save(self) -> Path:
        """Write the spec next to the node's log; returns its path."""
        path = Path(self.run_dir) / f"{self.name}.json"
        path.write_text(json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> NodeSpec:
        """Read a spec written by :meth:`save`."""
        d = json.loads(Path(path).read_text())
        return cls(**{**d, "mode": RunMode(d.get("mode", RunMode.REALTIME))})


class Node:
    """Base class of every node; subclasses implement the on_* hooks and only wire stages to the bus."""

    def __init__(self, spec: NodeSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.ctx = zmq.Context()
        self.pub = Publisher(self.ctx, spec.endpoints[spec.name], spec.name)
        listen = [spec.endpoints[n] for n in spec.upstream] + [spec.endpoints["supervisor"]]
        topics = {*spec.topics, Topic.HEARTBEAT.value, Topic.CONTROL.value}
        self.sub = Subscriber(self.ctx, listen, topics, rcvhwm=self.rcvhwm())
        self.dealer = self.ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.IDENTITY, spec.name.encode())
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.connect(spec.control)
        self.poller = zmq.Poller()
        self.poller.register(self.sub.sock, zmq.POLLIN)
        self.state = NodeState.STARTING
        self.stopping = False
        self.stop_deadline = 0.0
        self.stopped_peers: set[str] = set()
        self.heard: set[str] = set()
        self.early: list[Message] = []  # data that overtook START (another publisher's pipe): kept, not dropped
        self.next_heartbeat = 0.0
        self.counters: dict[str, int] = {}
        self.parent_pid = os.getppid()
        self.supervisor_seen = time.monotonic()

    # ------------------------------------------------------------------ hooks for subclasses
    def rcvhwm(self) -> int:
        """Receive queue bound; 0 = unlimited (the default: nothing upstream is dropped here)."""
        return 0

    def on_start(self) -> None:
        """Called once when the session starts."""

    def on_message(self, msg: Message) -> None:
        """Called for every data message received."""

    def on_tick(self, now: float) -> None:
        """Called at least every heartbeat interval and after each batch of messages."""

    def on_operator(self, msg: Control) -> None:
        """An experimenter's command the supervisor accepted (``Control.command``); most nodes ignore it."""

    def on_safe(self, reason: str) -> None:
        """The supervisor declared the session unsafe (a node died)."""

    def on_stop(self) -> None:
        """Called once, after draining, before the final heartbeat."""

    def on_fail(self) -> None:
        """Called once if the node fails with an exception: leave devices and files safe (best effort)."""

    def next_wakeup(self, now: float) -> float:
        """Latest time the loop may sleep until (a pacing node returns its next frame deadline)."""
        return now + HEARTBEAT_S

    def extra_poll(self) -> list[Any]:
        """Further sockets or file descriptors to wake up on (e.g. a serial port)."""
        return []

    # ------------------------------------------------------------------ runtime
    def log(self, level: LogLevel, text: str, frame: int = -1) -> None:
        """Publish a log line (the supervisor reports errors)."""
        self.pub.publish(Log(frame=frame, node=self.name, level=level, text=text))

    def heartbeat(self) -> None:
        """Publish this node's state and counters."""
        c = dict(self.counters)
        c.update(sent=self.pub.sent, received=self.sub.received, gaps=self.sub.gaps,
                 wire_errors=len(self.sub.wire_errors))
        self.pub.publish(Heartbeat(node=self.name, state=self.state, counters=c))

    def supervisor_lost(self, now: float) -> str:
        """Why the supervisor is taken to be gone ('' while it is there)."""
        if os.getppid() != self.parent_pid:
            return f"the supervisor (pid {self.parent_pid}) exited"
        if now - self.supervisor_seen > SUPERVISOR_TIMEOUT_S:
            return f"no heartbeat from the supervisor for {SUPERVISOR_TIMEOUT_S:.0f} s"
        return ""

    def _startup_messages(self) -> list[Message]:
        """One start-up turn: heartbeat every 50 ms (late peers are still joining), then what arrived."""
        now = time.monotonic()
        if now >= self.next_heartbeat:
            self.heartbeat()
            self.next_heartbeat = now + 0.05
        out = []
        if self.poller.poll(50):
            while (msg := self.sub.recv()) is not None:
                out.append(msg)
        return out

    def _startup(self) -> None:
        expect = set(self.spec.upstream) | {"supervisor"}
        while self.heard < expect:
            self.heard.update(m.src for m in self._startup_messages() if isinstance(m, Heartbeat))
            if os.getppid() != self.parent_pid:
                raise RuntimeError(f"the supervisor (pid {self.parent_pid}) exited during start-up")
        self.state = NodeState.READY
        self.dealer.send(b"ready")
        while self.state is NodeState.READY and not self.stopping:  # wait for START
            if os.getppid() != self.parent_pid:
                raise RuntimeError(f"the supervisor (pid {self.parent_pid}) exited during start-up")
            for msg in self._startup_messages():
                if isinstance(msg, Control) and msg.action is ControlAction.START:
                    self.state = NodeState.RUNNING
                elif isinstance(msg, Control) and msg.action is ControlAction.STOP:
                    self.stopping = True
                elif not isinstance(msg, Heartbeat | Control) or (
                        isinstance(msg, Control) and msg.action is ControlAction.OPERATOR):
                    # also what follows START in the same batch: data, and an operator's command (a console
                    # may send one the moment the session starts; dropped here, the task would never apply it)
                    self.early.append(msg)

    def _handle(self, msg: Message) -> None:
        if msg.src == "supervisor":
            self.supervisor_seen = time.monotonic()
        if isinstance(msg, Heartbeat):
            if msg.state is NodeState.STOPPED or msg.state is NodeState.FAILED:
                self.stopped_peers.add(msg.src)
            self.on_message(msg)
        elif isinstance(msg, Control):
            if msg.action is ControlAction.SAFE:
                self.on_safe(msg.reason)
            elif msg.action is ControlAction.STOP and not self.stopping:
                self.stopping = True
                self.stop_deadline = time.monotonic() + DRAIN_TIMEOUT_S
            elif msg.action is ControlAction.OPERATOR:
                self.on_operator(msg)
        else:
            self.on_message(msg)

    def run(self) -> None:
        """Start-up handshake, main loop, drain, final heartbeat."""
        self._startup()
        self.stop_deadline = time.monotonic() + DRAIN_TIMEOUT_S
        self.supervisor_seen = time.monotonic()
        if not self.stopping:
            self.on_start()
        for early in self.early:
            self._handle(early)
        self.early.clear()
        for item in self.extra_poll():
            self.poller.register(item, zmq.POLLIN)
        while True:
            now = time.monotonic()
            if self.stopping and (
                set(self.spec.drain_from) <= self.stopped_peers or now >= self.stop_deadline
            ):
                break
            timeout_ms = max(0.0, (min(self.next_wakeup(now), self.next_heartbeat) - now) * 1000)
            events = dict(self.poller.poll(math.ceil(timeout_ms)))  # round up: never spin
            if self.sub.sock in events:
                for _ in range(1000):  # bounded batch so ticks and heartbeats still happen under load
                    received = self.sub.recv()
                    if received is None:
                        break
                    self._handle(received)
            now = time.monotonic()
            if not self.stopping and (lost := self.supervisor_lost(now)):
                self.log(LogLevel.ERROR, f"{lost}: going safe and stopping")
                print(f"{self.name}: {lost}: going safe and stopping", file=sys.stderr, flush=True)  # into its log
                self.on_safe(lost)
                self.stopping = True
                self.stop_deadline = now + DRAIN_TIMEOUT_S
            self.on_tick(now)
            if now >= self.next_heartbeat:
                self.heartbeat()
                self.next_heartbeat = now + HEARTBEAT_S
        self.on_stop()
        self.state = NodeState.STOPPED
        self.heartbeat()

    def close(self) -> None:
        """Release sockets and the context."""
        self.pub.close()
        self.sub.close()
        self.dealer.close()
        self.ctx.term()


# kind -> (module, class); imported on use so a node process loads only what it runs.
NODE_KINDS = {
    "pipeline": ("bcirig.nodes.pipeline", "PipelineNode"),
    "task": ("bcirig.nodes.task", "TaskNode"),
    "valve": ("bcirig.nodes.valve", "ValveNode"),
    "recorder": ("bcirig.nodes.recorder", "RecorderNode"),
    "display": ("bcirig.nodes.display", "DisplayNode"),
    "sound": ("bcirig.nodes.sound", "SoundNode"),
    "console": ("bcirig.nodes.console", "ConsoleNode"),
    "lickport": ("bcirig.nodes.lickport", "LickportNode"),
}


def node_class(kind: str) -> type[Node]:
    """The Node subclass for ``kind``: a known kind, or ``"package.module:Class"`` (a test's faulty node)."""
    if ":" in kind:
        module, name = kind.split(":", 1)
    elif kind in NODE_KINDS:
        module, name = NODE_KINDS[kind]
    else:
        raise ValueError(f"unknown node kind {kind!r}; known: {', '.join(NODE_KINDS)}")
    cls: type[Node] = getattr(importlib.import_module(module), name)
    return cls



def node_main(spec_path: str) -> int:
    """Process entry point: build the node named in the spec, run it, report any failure."""
    from bcirig.threads import pin_blas_threads

    pin_blas_threads()
    spec = NodeSpec.load(spec_path)
    if spec.options.get("nice"):  # the recorder and the console yield a core to the loop's nodes
        os.nice(int(spec.options["nice"]))
    node: Node | None = None
    try:
        node = node_class(spec.kind)(spec)
        node.run()
        return 0
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
        if node is not None:
            node.state = NodeState.FAILED
            try:
                node.on_fail()
            except Exception as cleanup:  # the first failure is the one to report; say this one too
                print(f"{node.name}: while leaving it safe: {type(cleanup).__name__}: {cleanup}", file=sys.stderr)
            try:
                node.log(LogLevel.ERROR, text)
                node.heartbeat()
            except zmq.ZMQError:
                pass
        return 1
    finally:
        if node is not None:
            node.close()
