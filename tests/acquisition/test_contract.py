"""One contract, every frame source: the same checks run against each implementation.

Each case builds the source, opens it, feeds it one known 2-D image the way its real peer would (a
sender over a socket, a TIFF written to its folder, or the simulator rendering), and asserts what the
node relies on: ``read()`` never blocks and returns RawFrames with the image, the arrival time on the
rig's clock and an index; ``poll_fds()`` is a list; ``close()`` can be called twice.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zmq

from bcirig.acquisition import FrameSource, RawFrame
from bcirig.acquisition.sender import FrameSender
from bcirig.config import (
    ByteOrder,
    ClooseRole,
    ClooseSourceConfig,
    ElementOrder,
    Framing,
    Imaging,
    NetworkSourceConfig,
    PixelType,
    TiffSourceConfig,
)
from tests.sim.conftest import short_protocol

IMAGING = Imaging(height=16, width=24, dtype=PixelType.UINT16)
IMAGE = (np.arange(16 * 24, dtype=np.uint16) * 7).reshape(16, 24)

Feed = Callable[[], None]


@contextmanager
def network(framing: Framing, port: int, _: Path) -> Iterator[tuple[Any, Feed, np.ndarray]]:
    from bcirig.acquisition.network import NetworkSource

    src = NetworkSource(NetworkSourceConfig(framing=framing, port=port))
    src.open()
    tx: list[FrameSender] = []

    def feed() -> None:
        tx.append(FrameSender(f"tcp://127.0.0.1:{port}" if framing == "zmq" else f"127.0.0.1:{port}", framing))
        tx[0].send(IMAGE, 0, time.monotonic_ns(), 0)

    try:
        yield src, feed, IMAGE
    finally:
        for t in tx:
            t.close()


@contextmanager
def cloose(port: int, _: Path) -> Iterator[tuple[Any, Feed, np.ndarray]]:
    from bcirig.acquisition.cloose import ClooseSource

    src = ClooseSource(ClooseSourceConfig(role=ClooseRole.SERVER, port=port, byte_order=ByteOrder.LITTLE,
                                          element_order=ElementOrder.ROW_MAJOR), IMAGING)
    src.open()
    conns: list[socket.socket] = []

    def feed() -> None:
        conns.append(socket.create_connection(("127.0.0.1", port)))
        conns[0].sendall(IMAGE.astype("<u2").tobytes())

    try:
        yield src, feed, IMAGE
    finally:
        for c in conns:
            c.close()


@contextmanager
def tiff(_: int, tmp: Path) -> Iterator[tuple[Any, Feed, np.ndarray]]:
    from bcirig.acquisition.tiff_tail import TiffTailSource

    src = TiffTailSource(TiffSourceConfig(directory=str(tmp), poll_ms=1.0), IMAGING)
    src.open()

    def feed() -> None:
        tifffile.imwrite(tmp / "a.tif", IMAGE[None])

    yield src, feed, IMAGE


@contextmanager
def simulated(_: int, __: Path) -> Iterator[tuple[Any, Feed, np.ndarray]]:
    from bcirig.acquisition.simulated import SimulatedSource
    from bcirig.config import parse_rig

    protocol = short_protocol(baseline=300, trials=1)
    src = SimulatedSource(protocol, parse_rig('[rig]\nname = "t"'))
    src.open()
    yield src, lambda: None, np.asarray(src.mouse.step(None).data[protocol.imaging.bci_plane])


CASES = {"network-zmq": lambda p, t: network(Framing.ZMQ, p, t),
         "network-tcp": lambda p, t: network(Framing.TCP, p, t),
         "cloose": cloose, "tiff": tiff, "simulated": simulated}


@pytest.mark.parametrize("name", list(CASES))
def test_frame_source_contract(name: str, free_port: int, tmp_path: Path) -> None:
    with CASES[name](free_port, tmp_path) as (src, feed, expected):
        assert isinstance(src, FrameSource)
        assert isinstance(src.poll_fds(), list)
        t = time.monotonic()
        first = src.read()  # nothing sent yet (the simulator renders on demand)
        assert time.monotonic() - t < 0.5, "read() must not block"
        assert all(isinstance(r, RawFrame) for r in first)
        before = time.monotonic_ns()
        feed()
        frames: list[RawFrame] = [] if not src.paced else first
        deadline = time.monotonic() + 10
        poller = zmq.Poller()
        while not frames and time.monotonic() < deadline:
            fds = src.poll_fds()
            for fd in fds:
                poller.register(fd, zmq.POLLIN)
            poller.poll(10)
            for fd in fds:
                poller.unregister(fd)
            frames = src.read()
        assert frames, f"{name}: no frame within 10 s"
        raw = frames[-1]
        assert raw.data.shape == expected.shape and raw.data.dtype == expected.dtype
        if not src.paced:  # the simulator's next frame differs from the one rendered above: shape suffices
            np.testing.assert_array_equal(raw.data, expected)
            assert raw.t_arrive_ns >= before
        assert raw.index >= 0 and raw.t_arrive_ns > 0
        assert src.stats.malformed == 0
        src.close()
        src.close()  # idempotent
