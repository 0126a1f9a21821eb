"""The rig's network source and the reference sender, over real sockets on this machine (127.0.0.0/8 only)."""

from __future__ import annotations

import itertools
import logging
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import tifffile
import zmq
import zmq.auth

from bcirig.acquisition import network, wire
from bcirig.acquisition.base import FrameSource, RawFrame, SourceError
from bcirig.acquisition.network import NetworkSource
from bcirig.acquisition.sender import FrameSender, MovieError, load_movie
from bcirig.acquisition.sender import main as send_main
from bcirig.cli import main as cli_main
from bcirig.config import Framing, NetworkSourceConfig

ROOT = Path(__file__).resolve().parents[2]
FRAMINGS = tuple(Framing)
OFF_LOOPBACK = "127.0.0.2"  # a loopback interface too, but not in config.LOOPBACK: exercises the guarded paths


def pump(src: NetworkSource, until: Callable[[list[RawFrame]], bool], timeout: float = 10.0) -> list[RawFrame]:
    """read() whenever the source's sockets wake up, until ``until(frames)`` or the deadline."""
    frames: list[RawFrame] = []
    deadline = time.monotonic() + timeout
    while not until(frames):
        assert time.monotonic() < deadline, f"timed out with {len(frames)} frames; {src.stats}"
        poller = zmq.Poller()
        for fd in src.poll_fds():  # asked every time: with TCP the connected socket comes and goes
            poller.register(fd, zmq.POLLIN)
        poller.poll(50)
        frames += src.read()
    return frames


def n_frames(n: int) -> Callable[[list[RawFrame]], bool]:
    return lambda frames: len(frames) >= n


@pytest.fixture
def source(free_port: int) -> Iterator[Callable[..., NetworkSource]]:
    """Open a NetworkSource on the free port (closed after the test)."""
    opened: list[NetworkSource] = []

    def make(framing: Framing, base_dir: Path | None = None, **kw: Any) -> NetworkSource:
        src = NetworkSource(NetworkSourceConfig(framing=framing, port=free_port, **kw), base_dir)
        src.open()
        opened.append(src)
        return src

    yield make
    for src in opened:
        src.close()


def frame_bytes(index: int, data: np.ndarray, plane: int = 0) -> bytes:
    return wire.pack_header(index, time.monotonic_ns(), plane, data) + data.tobytes()


def image(dtype: str, seed: int, shape: tuple[int, int] = (5, 7)) -> np.ndarray:
    info = np.iinfo(np.dtype(dtype))
    return np.random.default_rng(seed).integers(info.min, info.max, shape, endpoint=True).astype(dtype)


# ---- frames arrive as sent ----

@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "int16", ">u2"])
def test_frames_arrive_intact(source: Callable[..., NetworkSource], free_port: int, framing: Framing,
                              dtype: str) -> None:
    src = source(framing)
    assert isinstance(src, FrameSource) and src.paced is False
    sender = FrameSender(f"127.0.0.1:{free_port}", framing)
    images = [image(dtype, k) for k in range(4)]
    sent = []
    for k, img in enumerate(images):
        column_major = k % 2 == 1  # a Fortran-ordered array sent in MATLAB's order arrives as the same image
        data = np.asfortranarray(img) if column_major else img
        t_acq = time.monotonic_ns()
        plane = -1 if k == 3 else k
        sender.send(data, 10 + k, t_acq, plane, column_major=column_major)
        sent.append((10 + k, plane, t_acq))
    frames = pump(src, n_frames(4))
    sender.close()
    assert [(f.index, f.plane, f.t_acq_ns) for f in frames] == sent
    for f, img in zip(frames, images, strict=True):
        assert f.t_arrive_ns >= f.t_acq_ns  # one machine, one monotonic clock
        assert f.data.shape == img.shape and f.data.dtype == img.dtype.newbyteorder("=")
        np.testing.assert_array_equal(f.data, img)
    assert src.stats.received == 4 and src.stats.malformed == 0


@pytest.mark.parametrize("framing", FRAMINGS)
def test_full_size_frames_are_views_of_the_received_bytes(source: Callable[..., NetworkSource], free_port: int,
                                                          framing: Framing) -> None:
    """512 x 796 uint16 (815 kB) from another thread: intact, and not copied after the socket."""
    src = source(framing)
    movie = image("uint16", 1, (3 * 512, 796)).reshape(3, 512, 796)

    def send() -> None:
        sender = FrameSender(f"tcp://127.0.0.1:{free_port}", framing)
        for i, img in enumerate(movie):
            sender.send(img, i, time.monotonic_ns(), 0)
        sender.close()

    thread = threading.Thread(target=send)
    thread.start()
    frames = pump(src, n_frames(3))
    thread.join()
    for f, img in zip(frames, movie, strict=True):
        np.testing.assert_array_equal(f.data, img)
        assert not f.data.flags.owndata


@pytest.mark.parametrize("framing", FRAMINGS)
def test_a_flood_is_read_in_bounded_batches(source: Callable[..., NetworkSource], free_port: int, framing: Framing,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """read() returns after a bounded amount of work; the rest keeps the socket readable for the next one."""
    monkeypatch.setattr(network, "MAX_MESSAGES_PER_READ", 4)
    monkeypatch.setattr(network, "MAX_RECVS_PER_READ", 8)
    src = source(framing)
    sender = FrameSender(f"127.0.0.1:{free_port}", framing)
    img = image("uint8", 11)
    for i in range(40):
        sender.send(img, i, 0, 0)
    batches: list[int] = []

    def done(frames: list[RawFrame]) -> bool:
        batches.append(len(frames))
        return len(frames) >= 40

    frames = pump(src, done)
    sender.close()
    assert [f.index for f in frames] == list(range(40))
    assert max(b - a for a, b in itertools.pairwise(batches)) <= 4


# ---- plain TCP: garbage, bad headers, disconnects, a second sender ----

def test_tcp_garbage_before_and_between_frames(source: Callable[..., NetworkSource], free_port: int) -> None:
    src = source("tcp")
    imgs = [image("uint16", k) for k in range(3)]
    with socket.create_connection(("127.0.0.1", free_port)) as c:
        c.sendall(b"\x00hello, not a frame" * 7 + frame_bytes(0, imgs[0]) + frame_bytes(1, imgs[1])
                  + b"BCI" + b"\xff" * 300 + b"BCIF-almost" + frame_bytes(2, imgs[2]))
        frames = pump(src, n_frames(3))
    assert [f.index for f in frames] == [0, 1, 2]
    for f, img in zip(frames, imgs, strict=True):
        np.testing.assert_array_equal(f.data, img)
    assert src.stats.malformed == 2  # two garbage runs, however long
    assert "BCIF" in src.stats.last_error


def test_tcp_magic_split_between_reads(source: Callable[..., NetworkSource], free_port: int) -> None:
    src = source("tcp")
    img = image("uint8", 3)
    bad = bytearray(wire.pack_header(0, 0, 0, img))
    bad[4] = 9  # protocol version 9
    good = frame_bytes(1, img)
    with socket.create_connection(("127.0.0.1", free_port)) as c:
        c.sendall(bytes(bad) + good[:2])
        pump(src, lambda _: src.stats.malformed == 1)
        c.sendall(good[2:])
        frames = pump(src, n_frames(1))
    assert [f.index for f in frames] == [1] and src.stats.malformed == 1
    np.testing.assert_array_equal(frames[0].data, img)


def test_tcp_header_with_a_wrong_payload_length(source: Callable[..., NetworkSource], free_port: int) -> None:
    src = source("tcp")
    img = image("uint16", 4)
    head = bytearray(wire.pack_header(0, 0, 0, img))
    head[36:40] = (img.nbytes + 2).to_bytes(4, "little")
    with socket.create_connection(("127.0.0.1", free_port)) as c:
        c.sendall(bytes(head) + img.tobytes() + b"\0\0" + frame_bytes(1, img))
        frames = pump(src, n_frames(1))
    assert [f.index for f in frames] == [1] and src.stats.malformed == 1
    assert "payload" in src.stats.last_error


def test_tcp_truncated_frame_at_disconnect_then_reconnect(source: Callable[..., NetworkSource],
                                                          free_port: int) -> None:
    src = source("tcp")
    imgs = [image("uint16", k) for k in range(4)]
    with socket.create_connection(("127.0.0.1", free_port)) as c:
        c.sendall(frame_bytes(0, imgs[0]) + frame_bytes(1, imgs[1])[:60])  # the header and 20 bytes of pixels
        pump(src, n_frames(1))
    with socket.create_connection(("127.0.0.1", free_port)) as c:  # at once: the rig finds the first one gone
        c.sendall(frame_bytes(2, imgs[2]) + frame_bytes(3, imgs[3]))
        frames = pump(src, n_frames(2))
        assert [f.index for f in frames] == [2, 3]
        np.testing.assert_array_equal(frames[1].data, imgs[3])
        s = src.stats
        assert (s.received, s.malformed, s.disconnects, s.reconnects, s.refused) == (3, 1, 1, 1, 0)


def test_tcp_second_sender_is_refused(source: Callable[..., NetworkSource], free_port: int) -> None:
    src = source("tcp")
    img = image("uint8", 5)
    with socket.create_connection(("127.0.0.1", free_port)) as first:
        first.sendall(frame_bytes(0, img))
        pump(src, n_frames(1))
        with socket.create_connection(("127.0.0.1", free_port)) as second:
            second.sendall(frame_bytes(100, img))
            pump(src, lambda _: src.stats.refused == 1)
            second.settimeout(5.0)
            try:
                closed = second.recv(1) == b""
            except ConnectionResetError:  # closed with the frame unread: the kernel resets it
                closed = True
            assert closed
        first.sendall(frame_bytes(1, img))
        frames = pump(src, n_frames(1))
    assert [f.index for f in frames] == [1] and src.stats.reconnects == 0


def test_tcp_off_loopback_warns(free_port: int, caplog: pytest.LogCaptureFixture) -> None:
    src = NetworkSource(NetworkSourceConfig(framing=Framing.TCP, bind=OFF_LOOPBACK, port=free_port, allow_network=True))
    with caplog.at_level(logging.WARNING, logger="bcirig.acquisition.network"):
        src.open()
    src.close()
    assert "plain TCP framing without authentication on 127.0.0.2" in caplog.text


# ---- ZeroMQ: malformed messages, connections ----

def test_zmq_malformed_messages_are_skipped(source: Callable[..., NetworkSource], free_port: int) -> None:
    src = source("zmq")
    img = image("uint16", 6)
    head = wire.pack_header(7, 0, 0, img)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{free_port}")
    push.send(head + img.tobytes())  # one part
    push.send_multipart([b"BCIF" + bytes(36), img.tobytes()])  # bad header
    push.send_multipart([head, img.tobytes()[:-2]])  # fewer pixels than the header says
    push.send_multipart([head, img.tobytes(), b"more"])  # three parts
    push.send_multipart([head, img.tobytes()])
    frames = pump(src, n_frames(1))
    push.close(linger=0)
    ctx.term()
    assert [f.index for f in frames] == [7] and src.stats.malformed == 4
    np.testing.assert_array_equal(frames[0].data, img)


def test_zmq_counts_disconnects_and_reconnects(source: Callable[..., NetworkSource], free_port: int) -> None:
    src = source("zmq")
    img = image("uint8", 7)
    first = FrameSender(f"tcp://127.0.0.1:{free_port}", "zmq")
    first.send(img, 0, 0, 0)
    pump(src, n_frames(1))
    first.close()
    second = FrameSender(f"tcp://127.0.0.1:{free_port}", "zmq")
    second.send(img, 1, 0, 0)
    frames = pump(src, lambda fr: len(fr) == 1 and src.stats.disconnects == 1 and src.stats.reconnects == 1)
    second.close()
    assert frames[0].index == 1


def make_keys(folder: Path, *names: str) -> None:
    for name in names:
        zmq.auth.create_certificates(folder, name)


def test_curve_admits_only_listed_keys(tmp_path: Path, free_port: int) -> None:
    make_keys(tmp_path, "rig", "listed", "unlisted")
    cfg = NetworkSourceConfig(framing=Framing.ZMQ, bind=OFF_LOOPBACK, port=free_port, secret_key="rig.key_secret",
                              allowed_keys=("listed.key",))
    src = NetworkSource(cfg, base_dir=tmp_path)  # key files are found relative to the rig file's folder
    src.open()
    address, img = f"tcp://{OFF_LOOPBACK}:{free_port}", image("uint16", 8)
    rig_public = str(tmp_path / "rig.key")
    senders = []
    try:
        intruder = FrameSender(address, "zmq", server_key=rig_public, client_key=str(tmp_path / "unlisted.key_secret"))
        senders.append(intruder)
        for i in range(3):
            intruder.send(img, 100 + i, 0, 0)
        frames = pump(src, lambda _: src.stats.refused >= 1)
        unlisted = zmq.auth.load_certificate(tmp_path / "unlisted.key")[0].decode()
        assert unlisted in src.stats.last_error and "not in allowed_keys" in src.stats.last_error
        keyless = FrameSender(address, "zmq")
        senders.append(keyless)
        for i in range(3):
            keyless.send(img, 200 + i, 0, 0)
        frames += pump(src, lambda _: src.stats.refused >= 2)
        listed = FrameSender(address, "zmq", server_key=rig_public, client_key=str(tmp_path / "listed.key_secret"))
        senders.append(listed)
        for i in range(3):
            listed.send(img, i, 0, 0)
        frames += pump(src, n_frames(3))  # sent after the others' frames: those would have come first
    finally:
        for sender in senders:
            sender.close(linger_s=0)  # the refused senders' frames would wait in vain
        src.close()
    assert [f.index for f in frames] == [0, 1, 2]
    np.testing.assert_array_equal(frames[2].data, img)
    assert src.stats.malformed == 0 and src.stats.received == 3


@pytest.mark.parametrize("secret, allowed, named", [
    ("missing.key_secret", "listed.key", "missing.key_secret"),
    ("rig.key", "listed.key", "rig.key"),  # a public key file where the secret one belongs
    ("rig.key_secret", "garbage.key", "garbage.key"),
])
def test_bad_key_files_name_the_file(tmp_path: Path, free_port: int, secret: str, allowed: str, named: str) -> None:
    make_keys(tmp_path, "rig", "listed")
    (tmp_path / "garbage.key").write_text("curve\n    public-key = \"not a key\"\n")
    cfg = NetworkSourceConfig(framing=Framing.ZMQ, bind=OFF_LOOPBACK, port=free_port, secret_key=secret,
                              allowed_keys=(allowed,))
    src = NetworkSource(cfg, base_dir=tmp_path)
    with pytest.raises(SourceError, match=named):
        src.open()
    src.close()


@pytest.mark.parametrize("framing", FRAMINGS)
def test_port_in_use(free_port: int, framing: Framing) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", free_port))
        squatter.listen()
        src = NetworkSource(NetworkSourceConfig(framing=framing, port=free_port))
        with pytest.raises(SourceError) as err:
            src.open()
    assert str(err.value) == f"port {free_port} on 127.0.0.1 is in use (another session or program?)"
    src.close()


def test_close_is_idempotent_and_unopened_is_quiet(free_port: int) -> None:
    src = NetworkSource(NetworkSourceConfig(framing=Framing.TCP, port=free_port))
    assert src.poll_fds() == [] and src.read() == []
    src.open()
    src.close()
    src.close()
    src.open()  # the port is free again at once (SO_REUSEADDR)
    src.close()


# ---- bcirig send, bcirig keys, load_movie ----

@pytest.mark.parametrize("framing, suffix, planes", [(Framing.TCP, ".npy", 2), (Framing.ZMQ, ".tif", 1)])
def test_bcirig_send_end_to_end(tmp_path: Path, source: Callable[..., NetworkSource], free_port: int,
                                framing: Framing, suffix: str, planes: int) -> None:
    movie = image("uint16", 9, (7 * 6, 8)).reshape(7, 6, 8)
    path = tmp_path / f"movie{suffix}"
    if suffix == ".npy":
        np.save(path, movie)
    else:
        tifffile.imwrite(path, movie)
    src = source(framing)
    proc = subprocess.Popen([sys.executable, "-m", "bcirig.cli", "send", str(path), "--rate", "200", "--drop", "3",
                             "--to", f"127.0.0.1:{free_port}", "--framing", framing, "--planes", str(planes)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        frames = pump(src, n_frames(5), timeout=60)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    # any number late: the machine is shared
    assert re.search(r"^bcirig send: 5 frames sent, 2 skipped, \d+ late, [\d.]+ Hz achieved", out)
    assert [f.index for f in frames] == [0, 1, 3, 4, 6]  # every 3rd index is missing: the rig sees gaps
    assert [f.plane for f in frames] == [i % planes for i in (0, 1, 3, 4, 6)]
    for f in frames:
        np.testing.assert_array_equal(f.data, movie[f.index])


def test_bcirig_send_reports_what_it_cannot_do(tmp_path: Path, free_port: int,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "m.npy", np.zeros((2, 3, 3), np.uint8))
    movie = str(tmp_path / "m.npy")
    assert send_main([movie, "--rate", "10", "--framing", "tcp", "--to", f"127.0.0.1:{free_port}"]) == 2
    assert f"cannot connect to 127.0.0.1:{free_port}" in capsys.readouterr().err  # nothing listens
    assert send_main([str(tmp_path / "absent.npy"), "--rate", "10"]) == 2
    assert "absent.npy" in capsys.readouterr().err
    assert send_main([movie, "--rate", "0"]) == 2


def test_load_movie_formats_and_errors(tmp_path: Path) -> None:
    movie = image("int16", 10, (3 * 4, 5)).reshape(3, 4, 5)
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["meta/scale"] = np.ones(3)
        f["acq/frames"] = movie
        f["acq/other"] = movie[::-1]
    np.testing.assert_array_equal(load_movie(tmp_path / "m.h5"), movie)
    np.testing.assert_array_equal(load_movie(tmp_path / "m.h5", "acq/other"), movie[::-1])
    tifffile.imwrite(tmp_path / "one.tif", movie[0])
    assert load_movie(tmp_path / "one.tif").shape == (1, 4, 5)
    np.save(tmp_path / "flat.npy", np.zeros(5, np.uint8))
    np.save(tmp_path / "float.npy", np.zeros((2, 3, 3), np.float32))
    (tmp_path / "broken.tif").write_bytes(b"not a tiff")
    (tmp_path / "m.avi").write_bytes(b"")
    for name, dataset, why in [("m.h5", "nope", "no dataset 'nope'"), ("flat.npy", None, "shape"),
                               ("float.npy", None, "float32"), ("broken.tif", None, "cannot read"),
                               ("m.avi", None, "unknown movie type"), ("absent.npy", None, "cannot read")]:
        with pytest.raises(MovieError, match=why) as err:
            load_movie(tmp_path / name, dataset)
        assert name in str(err.value)


def test_bcirig_keys_writes_a_pair_and_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "keys"
    assert cli_main(["keys", "scope1", "--dir", str(folder)]) == 0
    public, secret = folder / "scope1.key", folder / "scope1.key_secret"
    out = capsys.readouterr().out
    assert str(public) in out and "allowed_keys" in out and str(secret) in out
    pub, sec = zmq.auth.load_certificate(secret)
    assert sec is not None and zmq.auth.load_certificate(public) == (pub, None)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    before = secret.read_bytes()
    assert cli_main(["keys", "scope1", "--dir", str(folder)]) == 1
    assert "not overwritten" in capsys.readouterr().err
    assert secret.read_bytes() == before
