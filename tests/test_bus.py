"""The bus counts every lost message: gaps inside a stream and a missing first message."""

import time
from pathlib import Path

import zmq

from bcirig.bus import Publisher, Subscriber
from bcirig.messages import Heartbeat, NodeState, Readout, Topic


def connected_pair(tmp_path: Path) -> tuple[zmq.Context[zmq.Socket[bytes]], Publisher, Subscriber]:
    ctx = zmq.Context()
    pub = Publisher(ctx, f"ipc://{tmp_path}/p.pub", "pipeline")
    sub = Subscriber(ctx, [f"ipc://{tmp_path}/p.pub"], [Topic.READOUT, Topic.HEARTBEAT])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the same handshake the nodes use: wait until a heartbeat arrives
        pub.publish(Heartbeat(node="pipeline", state=NodeState.STARTING))
        if sub.sock.poll(20) and isinstance(sub.recv(), Heartbeat):
            return ctx, pub, sub
    raise AssertionError("no heartbeat within 10 s")


def drain(sub: Subscriber, n: int) -> list[Readout]:
    got: list[Readout] = []
    while len(got) < n and sub.sock.poll(2000):
        msg = sub.recv()
        if isinstance(msg, Readout):
            got.append(msg)
    return got


def test_gaps_are_counted_per_publisher_and_topic(tmp_path: Path) -> None:
    ctx, pub, sub = connected_pair(tmp_path)
    try:
        for i in range(5):
            pub.publish(Readout(frame=i))
        pub.seq[Topic.READOUT] += 3  # three readouts lost on the way
        pub.publish(Readout(frame=8))
        for _ in range(4):  # heartbeats interleaved on another topic do not count as gaps
            pub.publish(Heartbeat(node="pipeline", state=NodeState.RUNNING))
        pub.publish(Readout(frame=9))
        got = drain(sub, 7)
        assert [m.frame for m in got] == [0, 1, 2, 3, 4, 8, 9]
        assert sub.gaps == 3 and sub.gaps_by_src == {"pipeline": 3}
        assert got[0].src == "pipeline" and got[0].seq == 1
    finally:
        pub.close()
        sub.close()
        ctx.term()


def test_a_lost_first_data_message_is_a_gap(tmp_path: Path) -> None:
    ctx, pub, sub = connected_pair(tmp_path)
    try:
        pub.seq[Topic.READOUT] = 1  # readout seq 1 never arrived
        pub.publish(Readout(frame=1))
        assert [m.frame for m in drain(sub, 1)] == [1]
        assert sub.gaps == 1
    finally:
        pub.close()
        sub.close()
        ctx.term()
