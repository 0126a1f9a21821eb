"""hardware/scanimage/bcirigFrameSender.m under GNU Octave, fed by a stand-in for ScanImage.

``tests/acquisition/scanimage_standin/scanimageStandin.m`` builds what ScanImage hands a user function
on ``frameAcquired`` (``src.hSI.hDisplay.stripeDataBuffer{...}``) from plain structs and calls the user
function once per frame; the frames it sends must arrive on 127.0.0.1 pixel for pixel, with the index,
time and plane ScanImage gave. Skipped when ``octave-cli`` or Octave's instrument-control package
(``tcpclient``) is missing (``make test`` installs both when run as root).
"""

from __future__ import annotations

import functools
import math
import re
import select
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from bcirig.acquisition import wire

if TYPE_CHECKING:
    from bcirig.acquisition.base import RawFrame
    from bcirig.acquisition.network import NetworkSource

ROOT = Path(__file__).resolve().parents[2]
SENDER_DIR = ROOT / "hardware" / "scanimage"
STANDIN_DIR = Path(__file__).resolve().parent / "scanimage_standin"
HEIGHT, WIDTH = 64, 96  # lines x pixels, as scanimageStandin.m builds them
INSTALL_HINT = "apt-get install octave octave-instrument-control"
RETRY_S = 2.0  # bcirigFrameSender.m's pause between connection attempts


# ---- what the stand-in sends (the same arithmetic as scanimageStandin.m) ----

def standin_image(k: int) -> np.ndarray:
    """Frame k's image (k from 1): lines x pixels int16."""
    r, c = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.int64)
    return np.asarray((k * 7919 + r * 131 + c * 17 + 7 * r * c) % 65536 - 32768, dtype=np.int16)


def matlab_round(x: float) -> int:
    """MATLAB's round (half away from zero) of a non-negative double."""
    whole = math.floor(x)
    return int(whole) + (1 if x - whole >= 0.5 else 0)


@dataclass(frozen=True)
class Expected:
    index: int
    t_acq_ns: int
    plane: int  # -1 = unknown
    column_major: bool  # acquisition 1 is ScanImage's transposed layout (row-major on the wire)
    image: np.ndarray


def expected_frames(n: int, planes: int) -> list[Expected]:
    """The frames scanimageStandin(port, n, planes, ...) sends, in order."""
    first = math.ceil(n / 2)
    out = []
    for k in range(1, n + 1):
        ts = (k - 1) / 30 + 0.0123456789
        in_first = k <= first
        out.append(Expected(index=k - 1, t_acq_ns=matlab_round(ts * 1e9),
                            plane=(k - 1) % planes if in_first else -1,
                            column_major=not in_first, image=standin_image(k)))
    return out


# ---- Octave ----

def _octave_call(code: str) -> list[str]:
    return [shutil.which("octave-cli") or "octave-cli", "--no-gui", "--no-history", "--norc", "--eval", code]


@functools.cache
def _octave_missing() -> str | None:
    """Why the Octave tests cannot run here, or None."""
    if shutil.which("octave-cli") is None:
        return f"octave-cli not found: {INSTALL_HINT}"
    probe = subprocess.run(_octave_call("pkg load instrument-control; disp(exist('tcpclient'))"),
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0 or probe.stdout.strip() not in ("2", "3"):
        return (f"Octave's instrument-control package (tcpclient) is missing: {INSTALL_HINT} "
                f"({probe.stderr.strip()[:200]})")
    return None


@pytest.fixture
def octave() -> None:
    reason = _octave_missing()
    if reason:
        print(reason)
        pytest.skip(reason)


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def start_standin(port: int, n: int, planes: int = 3, period_s: float = 0.0) -> subprocess.Popen[str]:
    """Octave running the stand-in; it sends n frames to 127.0.0.1:port. ``pkg load instrument-control``
    is needed in Octave only (MATLAB has tcpclient built in), so it is here and not in the .m file."""
    code = (f"pkg load instrument-control; addpath({_quote(SENDER_DIR)}); addpath({_quote(STANDIN_DIR)}); "
            f"scanimageStandin({port}, {n}, {planes}, {period_s!r});")
    return subprocess.Popen(_octave_call(code), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 60.0) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"octave did not finish in {timeout} s\nstdout: {out}\nstderr: {err}")
    assert proc.returncode == 0, f"octave exited {proc.returncode}\nstdout: {out}\nstderr: {err}"
    return out, err


# ---- a plain-TCP receiver of the bcirig frame protocol, written against wire.py ----

@dataclass(frozen=True)
class Received:
    connection: int  # 1 for the first connection, 2 after a reconnect ...
    header: wire.FrameHeader
    image: np.ndarray


class TcpReceiver:
    """Listens on 127.0.0.1 (port 0: the OS picks a free one) and decodes header, pixels, header, ...

    ``drop_after``: close the first connection after that many frames (a rig that goes away)."""

    def __init__(self, drop_after: int | None = None) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self.port = int(self._listener.getsockname()[1])
        self.frames: list[Received] = []
        self.connections = 0
        self.errors: list[BaseException] = []
        self._drop_after = drop_after
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="scanimage-test-receiver", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([self._listener], [], [], 0.05)
                if ready:
                    conn, _ = self._listener.accept()
                    with self._changed:
                        self.connections += 1
                        number = self.connections
                    with conn:
                        self._read(conn, number)
        except BaseException as exc:  # surfaced by the test, never lost in the thread
            self.errors.append(exc)
        finally:
            with self._changed:
                self._changed.notify_all()

    def _read(self, conn: socket.socket, number: int) -> None:
        buf = bytearray()
        count = 0
        while not self._stop.is_set():
            ready, _, _ = select.select([conn], [], [], 0.05)
            if not ready:
                continue
            chunk = conn.recv(1 << 20)
            if not chunk:
                return
            buf += chunk
            while len(buf) >= wire.HEADER_BYTES:
                header = wire.unpack_header(bytes(buf[:wire.HEADER_BYTES]))
                end = wire.HEADER_BYTES + header.payload_bytes
                if len(buf) < end:
                    break
                image = wire.pixels(header, bytes(buf[wire.HEADER_BYTES:end])).copy()
                del buf[:end]
                count += 1
                with self._changed:
                    self.frames.append(Received(number, header, image))
                    self._changed.notify_all()
                if number == 1 and self._drop_after is not None and count >= self._drop_after:
                    return

    def wait_for(self, n: int, timeout: float) -> list[Received]:
        """Wait until n frames have arrived (or the deadline passes); the frames so far."""
        return self.wait_until(lambda frames: len(frames) >= n, timeout)

    def wait_until(self, done: Callable[[list[Received]], bool], timeout: float) -> list[Received]:
        """Wait until ``done(frames so far)`` (or the deadline passes); the frames so far."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done(self.frames) and not self.errors:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return list(self.frames)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._listener.close()
        assert not self.errors, f"receiver failed: {self.errors!r}"


@pytest.fixture
def receiver() -> Iterator[Callable[..., TcpReceiver]]:
    made: list[TcpReceiver] = []

    def make(**kwargs: Any) -> TcpReceiver:
        made.append(TcpReceiver(**kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


def _assert_frame(got_index: int, got_t: int, got_plane: int, image: np.ndarray, want: Expected) -> None:
    assert (got_index, got_t, got_plane) == (want.index, want.t_acq_ns, want.plane)
    assert image.dtype == np.int16 and image.shape == (HEIGHT, WIDTH)
    assert np.array_equal(image, want.image), f"frame {want.index}: pixels differ"


# ---- tests ----

M_FILES = [SENDER_DIR / "bcirigFrameSender.m", *sorted(STANDIN_DIR.glob("*.m"))]
_M_STRING = re.compile(r"(?<![\w)\]}.'])'(?:[^']|'')*'")  # a quote after a value is a transpose
_OCTAVE_ONLY = re.compile(r'#|!|\+\+|--|[-+*/]=|"|\b(?:end(?:if|for|while|switch|function|_try_catch)'
                          r'|unwind_protect|printf|puts|fputs)\b')


@pytest.mark.parametrize("path", M_FILES, ids=lambda p: p.name)
def test_m_files_are_plain_matlab(path: Path) -> None:
    """ScanImage runs in MATLAB: no Octave-only syntax (checked without Octave)."""
    bad = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        code = _M_STRING.sub("''", line).split("%", 1)[0]
        if _OCTAVE_ONLY.search(code):
            bad.append(f"{path.name}:{number}: {line.strip()}")
    assert not bad, "Octave-only syntax:\n" + "\n".join(bad)


def test_frames_arrive_pixel_for_pixel(octave: None, receiver: Callable[..., TcpReceiver]) -> None:
    """Both layouts (ScanImage's transposed images, plain lines x pixels), both acquisitions of a LOOP."""
    n, planes = 12, 3
    rx = receiver()
    proc = start_standin(rx.port, n, planes)
    _, err = finish(proc)
    frames = rx.wait_for(n, timeout=10)
    assert "warning" not in err, err
    want = expected_frames(n, planes)
    assert len(frames) == n, f"{len(frames)} of {n} frames arrived\n{err}"
    assert rx.connections == 1
    for got, w in zip(frames, want, strict=True):
        h = got.header
        assert (h.height, h.width, h.dtype, h.column_major, h.big_endian) == (HEIGHT, WIDTH, np.dtype("<i2"),
                                                                              w.column_major, False)
        _assert_frame(h.index, h.t_acq_ns, h.plane, got.image, w)
    assert any(np.any(f.image < 0) for f in frames) and any(np.any(f.image > 0) for f in frames)


def _network_source() -> type[NetworkSource]:
    try:
        from bcirig.acquisition.network import NetworkSource
    except ImportError as exc:
        pytest.skip(f"bcirig/acquisition/network.py (NetworkSource) not there yet: {exc}")
    return NetworkSource


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_rig_network_source_receives_the_frames(octave: None) -> None:
    """The rig's own receiver (``[source] kind = "network"``, framing "tcp") gets the same frames."""
    network_source = _network_source()
    from bcirig.config import Framing, NetworkSourceConfig

    n, planes = 12, 3
    port = _free_port()
    source = network_source(NetworkSourceConfig(framing=Framing.TCP, bind="127.0.0.1", port=port), base_dir=None)
    source.open()
    try:
        proc = start_standin(port, n, planes)
        frames: list[RawFrame] = []
        deadline = time.monotonic() + 30
        idle = threading.Event()
        while len(frames) < n and time.monotonic() < deadline:
            fds = source.poll_fds()
            if fds:
                select.select(fds, [], [], 0.05)
            else:
                idle.wait(source.poll_interval_s)
            frames.extend(source.read())
        finish(proc)
        malformed = source.stats.malformed
    finally:
        source.close()
    assert malformed == 0
    assert len(frames) == n, f"{len(frames)} of {n} frames arrived"
    for got, w in zip(frames, expected_frames(n, planes), strict=True):
        _assert_frame(got.index, got.t_acq_ns, got.plane, np.asarray(got.data), w)


def test_rig_not_listening_warns_once_and_carries_on(octave: None) -> None:
    """Nothing listens: every frame is dropped, one warning, no error into ScanImage's loop."""
    port = _free_port()
    _, err = finish(start_standin(port, 6))
    assert err.count("warning: bcirigFrameSender: cannot connect") == 1, err
    assert not any(line.startswith("error:") for line in err.splitlines()), err


@pytest.mark.slow
def test_reconnects_after_the_rig_drops_the_connection(octave: None, receiver: Callable[..., TcpReceiver]) -> None:
    """The rig closes the connection after 2 frames; the sender warns once, tries again RETRY_S later
    (not on every frame), and the frames after the gap arrive intact, their indices showing the gap."""
    n, period = 300, 0.01  # >= 3 s of frames: time for a reconnect RETRY_S after the failure
    rx = receiver(drop_after=2)
    out, err = finish(start_standin(rx.port, n, planes=1, period_s=period), timeout=120)
    frames = rx.wait_until(lambda got: bool(got) and got[-1].header.index == n - 1, timeout=10)
    assert rx.connections == 2, f"{rx.connections} connections\n{out}\n{err}"
    assert err.count("warning: bcirigFrameSender: lost the connection") == 1, err
    assert out.count("bcirigFrameSender: connected to the rig") == 1, out
    first = [f for f in frames if f.connection == 1]
    second = [f for f in frames if f.connection == 2]
    assert [f.header.index for f in first] == [0, 1]
    indices = [f.header.index for f in second]
    assert indices == list(range(indices[0], n)), "frames after the reconnect are not contiguous"
    assert indices[0] > 2  # the frames sent while the rig was away are missing, and the rig sees the gap
    want = expected_frames(n, planes=1)
    for got in second:
        _assert_frame(got.header.index, got.header.t_acq_ns, got.header.plane, got.image, want[got.header.index])
