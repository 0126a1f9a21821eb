"""ZeroMQ plumbing: one PUB socket per node, SUB sockets that count gaps, endpoints on loopback only.

Each node binds one PUB socket at its own endpoint and connects SUB sockets to the publishers it needs.
Sequence numbers are per (publisher, topic), so a subscriber that takes only some topics still sees a
gap-free sequence; every gap is counted (no silent loss).

High-water marks: the recorder subscribes with an unlimited receive queue; a publisher keeps up to
``SNDHWM`` messages per subscriber, so a slow subscriber (a console) loses only its own messages and
never slows the publisher, the task or the recorder.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import zmq

from bcirig.config import BusConfig, Transport
from bcirig.messages import Message, Topic, WireError, decode, encode

SNDHWM = 20000
# Data topics start at seq 1 after START, so a missing first message is a gap; these do not.
_JOIN_ANYTIME = frozenset({Topic.HEARTBEAT, Topic.LOG, Topic.CONTROL})


def endpoints(run_dir: Path, names: Iterable[str], bus: BusConfig) -> dict[str, str]:
    """One PUB endpoint per node (ipc:// under run_dir, or tcp:// on loopback ports from base_port)."""
    out = {}
    for i, name in enumerate(names):
        if bus.transport == Transport.IPC:
            out[name] = f"ipc://{run_dir / (name + '.pub')}"
        else:
            out[name] = f"tcp://{bus.host}:{bus.base_port + i}"
    return out


class Publisher:
    """A node's PUB socket; stamps sequence numbers and the publisher's name."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, src: str, hwm: int = SNDHWM) -> None:
        self.sock = ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.sock.bind(endpoint)
        self.src = src
        self.seq: dict[Topic, int] = defaultdict(int)
        self.sent = 0

    def publish(self, msg: Message, stamp: str | None = None) -> None:
        """Send ``msg``; if ``stamp`` is given, add ``t_ns[stamp] = monotonic_ns()`` just before sending."""
        self.seq[msg.TOPIC] += 1
        msg.seq = self.seq[msg.TOPIC]
        msg.src = self.src
        if stamp:
            msg.t_ns[stamp] = time.monotonic_ns()
        self.sock.send_multipart(encode(msg), copy=False)
        self.sent += 1

    def close(self) -> None:
        """Close the socket (pending messages get LINGER time to leave)."""
        self.sock.close()


class Subscriber:
    """A SUB socket over several publishers; decodes, counts received messages, gaps and wire errors."""

    def __init__(
        self, ctx: zmq.Context[zmq.Socket[bytes]], endpoints: Iterable[str], topics: Iterable[Topic | str], *,
        rcvhwm: int = 0,
    ) -> None:
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        for t in topics:
            self.sock.setsockopt(zmq.SUBSCRIBE, str(t).encode())
        for ep in endpoints:
            self.sock.connect(ep)
        self.last_seq: dict[tuple[str, str], int] = {}
        self.received = 0
        self.gaps = 0
        self.gaps_by_src: dict[str, int] = defaultdict(int)
        self.wire_errors: list[str] = []

    def recv(self) -> Message | None:
        """Receive one message without blocking (call after poll says readable); None on a bad message."""
        try:
            parts = self.sock.recv_multipart(copy=False, flags=zmq.NOBLOCK)
        except zmq.Again:
            return None
        try:
            msg = decode(parts)
        except WireError as exc:
            self.wire_errors.append(str(exc))
            return None
        self.received += 1
        key = (msg.src, msg.TOPIC.value)
        last = self.last_seq.get(key)
        if last is None and msg.TOPIC in _JOIN_ANYTIME:
            last = msg.seq - 1  # periodic topics: what was sent before we connected is not a loss
        missing = msg.seq - (last or 0) - 1
        if missing > 0:
            self.gaps += missing
            self.gaps_by_src[msg.src] += missing
        self.last_seq[key] = msg.seq
        return msg

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()
