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

An exception anywhere is published as an error ``Log`` naming the node, then the process exits 1; the
supervisor turns that into the session's one-line failure message.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import zmq

from bcirig.bus import Publisher, Subscriber
from bcirig.messages import Control, ControlAction, Heartbeat, Log, Message, NodeState, Topic

HEARTBEAT_S = 0.1
DRAIN_TIMEOUT_S = 5.0


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
    mode: str = "realtime"
    options: dict[str, Any] = field(default_factory=dict)

    def save(self) -> Path:
        """Write the spec next to the node's log; returns its path."""
        path = Path(self.run_dir) / f"{self.name}.json"
        path.write_text(json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> NodeSpec:
        """Read a spec written by :meth:`save`."""
        return cls(**json.loads(Path(path).read_text()))


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
        crash = spec.options.get("crash_at_frame")
        self.crash_at_frame = int(crash) if crash is not None else None
        self.crash_how = str(spec.options.get("crash_how", "raise"))

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

    def on_safe(self, reason: str) -> None:
        """The supervisor declared the session unsafe (a node died)."""

    def on_stop(self) -> None:
        """Called once, after draining, before the final heartbeat."""

    def next_wakeup(self, now: float) -> float:
        """Latest time the loop may sleep until (a pacing node returns its next frame deadline)."""
        return now + HEARTBEAT_S

    def extra_poll(self) -> list[Any]:
        """Further sockets or file descriptors to wake up on (e.g. a serial port)."""
        return []

    # ------------------------------------------------------------------ runtime
    def log(self, level: str, text: str, frame: int = -1) -> None:
        """Publish a log line (the supervisor reports errors)."""
        self.pub.publish(Log(frame=frame, node=self.name, level=level, text=text))

    def heartbeat(self) -> None:
        """Publish this node's state and counters."""
        c = dict(self.counters)
        c.update(sent=self.pub.sent, received=self.sub.received, gaps=self.sub.gaps,
                 wire_errors=len(self.sub.wire_errors))
        self.pub.publish(Heartbeat(node=self.name, state=self.state, counters=c))

    def check_crash(self, frame: int) -> None:
        """Fault injection for tests (node option crash_at_frame): fail as a real node would."""
        if self.crash_at_frame is not None and frame >= self.crash_at_frame:
            if self.crash_how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.crash_how == "hang":  # stuck in a driver call: no heartbeat, no exit
                while True:
                    time.sleep(3600)
            raise RuntimeError(f"injected failure at frame {frame}")

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
        self.state = NodeState.READY
        self.dealer.send(b"ready")
        while self.state is NodeState.READY and not self.stopping:  # wait for START
            for msg in self._startup_messages():
                if isinstance(msg, Control) and msg.action is ControlAction.START:
                    self.state = NodeState.RUNNING
                elif isinstance(msg, Control) and msg.action is ControlAction.STOP:
                    self.stopping = True
                elif not isinstance(msg, Heartbeat | Control):
                    self.early.append(msg)  # also what follows START in the same batch

    def _handle(self, msg: Message) -> None:
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
        else:
            self.on_message(msg)

    def run(self) -> None:
        """Start-up handshake, main loop, drain, final heartbeat."""
        self._startup()
        self.stop_deadline = time.monotonic() + DRAIN_TIMEOUT_S
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


def node_main(spec_path: str) -> int:
    """Process entry point: build the node named in the spec, run it, report any failure."""
    from bcirig.nodes import node_class
    from bcirig.threads import pin_blas_threads

    pin_blas_threads()
    spec = NodeSpec.load(spec_path)
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
                node.log("error", text)
                node.heartbeat()
            except zmq.ZMQError:
                pass
        return 1
    finally:
        if node is not None:
            node.close()
