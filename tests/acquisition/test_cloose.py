"""ClooseSource against real senders on 127.0.0.1: byte layouts, planes, both roles, a link that drops."""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from bcirig.acquisition.base import FrameSource, RawFrame
from bcirig.acquisition.cloose import ClooseSource
from bcirig.config import ByteOrder, ClooseRole, ClooseSourceConfig, ElementOrder, Imaging, PixelType

IMAGING = Imaging(height=8, width=12, dtype=PixelType.UINT16)  # not square: a transposition cannot pass


def meant(n: int, imaging: Imaging, seed: int = 0) -> list[np.ndarray]:
    """The images the sender means: A(line, pixel) as (height, width) arrays."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(imaging.dtype)
    hi = int(np.iinfo(dt).max)
    return [rng.integers(0, hi, size=(imaging.height, imaging.width), dtype=dt, endpoint=True) for _ in range(n)]


def encode(a: np.ndarray, cfg: ClooseSourceConfig) -> bytes:
    """What a sender configured like ``cfg`` puts on the wire for the image ``a``."""
    if cfg.invert:
        a = np.invert(a)
    a = a.astype(a.dtype.newbyteorder(">" if cfg.byte_order == "big" else "<"))
    return a.tobytes(order="F" if cfg.element_order == "column_major" else "C")


def pump(src: ClooseSource) -> list[RawFrame]:
    """One turn of the node's loop: read, then wait on the fds (as they are now) for at most a poll interval."""
    frames = src.read()
    select.select(src.poll_fds(), [], [], src.poll_interval_s)
    return frames


def collect(src: ClooseSource, n: int, timeout: float = 10.0) -> list[RawFrame]:
    """Read until ``n`` frames have arrived (fails after ``timeout``)."""
    out: list[RawFrame] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < deadline, f"{len(out)} of {n} frames arrived; stats {src.stats}"
        out += pump(src)
    return out


def wait_until(src: ClooseSource, what: Callable[[], bool], timeout: float = 10.0) -> list[RawFrame]:
    """Read until ``what()`` holds; returns the frames read meanwhile."""
    out: list[RawFrame] = []
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, f"condition not met; stats {src.stats}"
        out += pump(src)
    return out


Script = Callable[[socket.socket, threading.Event], None]


@contextmanager
def serving(port: int, script: Script) -> Iterator[threading.Event]:
    """A test server on 127.0.0.1:port running ``script(listener, done)`` in a thread; yields ``done``."""
    lsock = socket.create_server(("127.0.0.1", port))
    lsock.settimeout(10.0)
    errors: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            script(lsock, done)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield done
    finally:
        done.set()
        t.join(10.0)
        lsock.close()
    assert not errors, errors


def sends(*chunks: bytes) -> Script:
    """A server script: accept one connection, send the chunks, hold the link until the test is done."""
    def script(lsock: socket.socket, done: threading.Event) -> None:
        conn, _ = lsock.accept()
        with conn:
            for c in chunks:
                conn.sendall(c)
            done.wait(10.0)
    return script


@pytest.fixture
def make_source() -> Iterator[Callable[..., ClooseSource]]:
    """Build and open ClooseSources; all are closed at teardown."""
    made: list[ClooseSource] = []

    def make(imaging: Imaging = IMAGING, **cfg: Any) -> ClooseSource:
        src = ClooseSource(ClooseSourceConfig(**cfg), imaging)
        made.append(src)
        src.open()
        return src

    yield make
    for src in made:
        src.close()


def test_is_a_free_running_frame_source(make_source: Callable[..., ClooseSource], free_port: int) -> None:
    src = make_source(role=ClooseRole.SERVER, port=free_port)
    assert isinstance(src, FrameSource)
    assert src.paced is False and src.poll_interval_s <= 0.05
    src.close()
    src.close()  # idempotent
    assert src.read() == [] and src.poll_fds() == []


def test_matlab_column_major_big_endian_is_what_matlab_sees(make_source: Callable[..., ClooseSource],
                                                            free_port: int) -> None:
    # Built by hand in MATLAB's memory order (A(:) runs down each column), big-endian as tcpip writes:
    # no numpy layout helper in the loop, so the test cannot share a mistake with the code.
    h, w = IMAGING.height, IMAGING.width

    def value(line: int, pixel: int) -> int:  # A(line, pixel), 1-based
        return 100 * line + pixel

    wire = b"".join(struct.pack(">H", value(line, pixel)) for pixel in range(1, w + 1) for line in range(1, h + 1))
    with serving(free_port, sends(wire)):
        src = make_source(port=free_port, element_order=ElementOrder.COLUMN_MAJOR, byte_order=ByteOrder.BIG)
        (f,) = collect(src, 1)
    assert f.data.shape == (h, w) and f.data.dtype == np.dtype("uint16") and f.data.dtype.isnative
    assert f.data[0, 0] == value(1, 1) and f.data[2, 5] == value(3, 6) and f.data[h - 1, w - 1] == value(h, w)
    assert f.data.flags.c_contiguous


@pytest.mark.parametrize(("dtype", "element_order", "byte_order", "invert"), [
    (PixelType.UINT16, ElementOrder.COLUMN_MAJOR, ByteOrder.BIG, False),
    (PixelType.UINT16, ElementOrder.COLUMN_MAJOR, ByteOrder.BIG, True),
    (PixelType.UINT8, ElementOrder.ROW_MAJOR, ByteOrder.LITTLE, False),
    (PixelType.UINT8, ElementOrder.ROW_MAJOR, ByteOrder.LITTLE, True),
    (PixelType.UINT32, ElementOrder.ROW_MAJOR, ByteOrder.LITTLE, False),
    (PixelType.UINT32, ElementOrder.COLUMN_MAJOR, ByteOrder.LITTLE, True),
])
def test_frames_arrive_pixel_identical(make_source: Callable[..., ClooseSource], free_port: int, dtype: PixelType,
                                       element_order: ElementOrder, byte_order: ByteOrder, invert: bool) -> None:
    imaging = Imaging(height=96, width=160, dtype=dtype)  # big enough to arrive in several pieces
    cfg = ClooseSourceConfig(port=free_port, element_order=element_order, byte_order=byte_order, invert=invert)
    images = meant(5, imaging)
    t0 = time.monotonic_ns()
    with serving(free_port, sends(b"".join(encode(a, cfg) for a in images))):
        src = make_source(imaging, port=free_port, element_order=element_order, byte_order=byte_order,
                          invert=invert)
        frames = collect(src, 5)
    for i, (f, a) in enumerate(zip(frames, images, strict=True)):
        assert f.data.dtype == np.dtype(dtype) and f.data.dtype.isnative
        np.testing.assert_array_equal(f.data, a)
        assert (f.index, f.plane, f.t_acq_ns) == (i, 0, -1)
        assert t0 <= f.t_arrive_ns <= time.monotonic_ns()
    assert src.stats.received == 5 and src.stats.malformed == 0


def test_planes_alternate(make_source: Callable[..., ClooseSource], free_port: int) -> None:
    imaging = Imaging(height=8, width=12, dtype=PixelType.UINT16, planes=2)
    images = meant(6, imaging)
    cfg = ClooseSourceConfig()
    with serving(free_port, sends(*(encode(a, cfg) for a in images))):
        frames = collect(make_source(imaging, port=free_port), 6)
    assert [(f.index, f.plane) for f in frames] == [(0, 0), (1, 1), (2, 0), (3, 1), (4, 0), (5, 1)]


def test_server_role_takes_one_sender_at_a_time(make_source: Callable[..., ClooseSource], free_port: int) -> None:
    row, little = ElementOrder.ROW_MAJOR, ByteOrder.LITTLE
    cfg = ClooseSourceConfig(role=ClooseRole.SERVER, port=free_port, element_order=row, byte_order=little)
    src = make_source(role=ClooseRole.SERVER, port=free_port, element_order=row, byte_order=little)
    images = meant(3, IMAGING, seed=4)
    with socket.create_connection(("127.0.0.1", free_port), timeout=5.0) as sender:
        sender.sendall(encode(images[0], cfg))
        frames = collect(src, 1)
        with socket.create_connection(("127.0.0.1", free_port), timeout=5.0) as intruder:
            wait_until(src, lambda: src.stats.refused == 1)
            intruder.settimeout(5.0)
            assert intruder.recv(1) == b""  # closed by the source
        sender.sendall(encode(images[1], cfg) + encode(images[2], cfg))
        frames += collect(src, 2)
    for f, a in zip(frames, images, strict=True):
        np.testing.assert_array_equal(f.data, a)
    assert [f.index for f in frames] == [0, 1, 2]
    assert (src.stats.reconnects, src.stats.disconnects) == (0, 0)
    assert "second" in src.stats.last_error


@pytest.mark.parametrize("role", list(ClooseRole))
def test_link_dropped_mid_frame_then_back(make_source: Callable[..., ClooseSource], free_port: int,
                                         role: str) -> None:
    imaging = Imaging(height=8, width=12, dtype=PixelType.UINT16, planes=2)
    cfg = ClooseSourceConfig()
    images = meant(5, imaging, seed=7)
    first = encode(images[0], cfg) + encode(images[1], cfg) + encode(images[2], cfg)[:50]  # 3rd cut short
    second = encode(images[3], cfg) + encode(images[4], cfg)
    if role == "client":
        def script(lsock: socket.socket, done: threading.Event) -> None:
            conn, _ = lsock.accept()
            with conn:
                conn.sendall(first)
            conn, _ = lsock.accept()
            with conn:
                conn.sendall(second)
                done.wait(10.0)

        with serving(free_port, script):
            src = make_source(imaging, port=free_port, reconnect_s=0.05)
            frames = collect(src, 4)
    else:
        src = make_source(imaging, role=ClooseRole.SERVER, port=free_port)
        with socket.create_connection(("127.0.0.1", free_port), timeout=5.0) as sender:
            sender.sendall(first)
            frames = collect(src, 2)
        wait_until(src, lambda: src.stats.disconnects == 1)
        with socket.create_connection(("127.0.0.1", free_port), timeout=5.0) as sender:
            sender.sendall(second)
            frames += collect(src, 2)
    kept = [images[0], images[1], images[3], images[4]]
    for f, a in zip(frames, kept, strict=True):
        np.testing.assert_array_equal(f.data, a)
    # The index counts frames received; the plane restarts at 0 with the new stream.
    assert [(f.index, f.plane) for f in frames] == [(0, 0), (1, 1), (2, 0), (3, 1)]
    s = src.stats
    assert (s.received, s.malformed, s.disconnects, s.reconnects, s.refused) == (4, 1, 1, 1, 0)
    assert len(src.gaps) == 1 and src.gaps[0][0] == 2 and src.gaps[0][1] > 0
    assert "down" in s.last_error


def test_client_waits_for_a_server_that_starts_later(make_source: Callable[..., ClooseSource],
                                                     free_port: int) -> None:
    src = make_source(port=free_port, reconnect_s=0.05)
    wait_until(src, lambda: "cannot connect" in src.stats.last_error)
    images = meant(2, IMAGING, seed=2)
    cfg = ClooseSourceConfig()
    with serving(free_port, sends(*(encode(a, cfg) for a in images))):
        frames = collect(src, 2)
    for f, a in zip(frames, images, strict=True):
        np.testing.assert_array_equal(f.data, a)
    assert (src.stats.reconnects, src.stats.disconnects, src.stats.malformed) == (0, 0, 0)
