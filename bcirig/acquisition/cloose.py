"""CLOOSE's raw frame stream over TCP: headerless frames of a fixed size, as CLOOSE (Francioni et al.) reads.

The acquisition PC sends each plane image as ``lines x pixels`` elements (uint8/16/32), nothing else: no
header, no index, no time. CLOOSE connects to a server on the acquisition PC; :class:`ClooseSource` does
the same in role ``client`` and can also listen (role ``server``) for senders that connect out.

Because the stream carries no index, the frame index is this receiver's own count of frames since the
session started, and frames the sender produced while the link was down cannot be counted from indices:
each outage is kept in :attr:`ClooseSource.gaps` (and named in ``stats.last_error``) instead.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import time
from typing import Any

import numpy as np

from bcirig.acquisition.base import RawFrame, SourceError, SourceStats
from bcirig.config import ByteOrder, ClooseRole, ClooseSourceConfig, ElementOrder, Imaging

MAX_FRAMES_PER_READ = 64  # a flooding sender must not keep read() from returning to the node's loop


class ClooseSource:
    """A CLOOSE-compatible receiver of headerless fixed-size frames (free-running).

    Frame size is ``imaging.height x imaging.width`` elements of ``imaging.dtype``. Each frame is decoded
    from the configured element order (``column_major``: the bytes of MATLAB's array ``A(line, pixel)``
    as MATLAB lays it out in memory, down each column first), byte order and inversion into a
    C-contiguous ``(height, width)`` array in native byte order, so ``data[l, p]`` is what the MATLAB
    user sees as ``A(l + 1, p + 1)``.

    Waking: :meth:`poll_fds` returns the sockets worth waiting on, which is better for latency than a
    timer (a frame is read the moment its last byte arrives). The set changes when a connection is made
    or lost, so **the node must call** :meth:`poll_fds` **again after every** :meth:`read` and wait on
    the new set, with a timeout of at most :attr:`poll_interval_s`: reconnection attempts (role
    ``client``) happen inside :meth:`read`, so read() must be called even when no fd is readable.

    Indices and planes: ``index`` counts every frame received since the session started and keeps
    counting across reconnects. A new connection is a new stream that starts at plane 0, so with
    ``planes > 1`` the plane counter restarts at 0 on each connection (``plane`` = frames on this
    connection modulo planes). A sender that restarted mid-volume without reconnecting cannot be
    detected here: the stream has no way to say so.
    """

    paced = False

    def __init__(self, cfg: ClooseSourceConfig, imaging: Imaging) -> None:
        self.cfg = cfg
        self.poll_interval_s = 0.02
        self.stats = SourceStats()
        self.gaps: list[tuple[int, int]] = []  # (index of the first frame after the outage, outage ns)
        self._planes = imaging.planes
        self._shape = (imaging.height, imaging.width)
        native = np.dtype(imaging.dtype)
        self._native = native
        self._wire = native.newbyteorder(">" if cfg.byte_order == ByteOrder.BIG else "<")
        self._frame_bytes = imaging.height * imaging.width * native.itemsize
        self._buf = bytearray(self._frame_bytes)
        self._view = memoryview(self._buf)
        self._have = 0  # bytes of the current frame received so far
        self._index = 0  # next frame index (all frames since the session started)
        self._conn_frames = 0  # frames on the current connection (plane counter)
        self._addr: Any = None
        self._family = socket.AF_INET
        self._listener: socket.socket | None = None
        self._sock: socket.socket | None = None  # the connected sender
        self._pending: socket.socket | None = None  # client: connection in progress
        self._pending_since = 0
        self._next_attempt_ns = 0
        self._connections = 0
        self._lost_at_ns = -1  # monotonic time of the last disconnect, -1 = link not down
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Listen (role ``server``) or start connecting (role ``client``); a server not yet up is no error."""
        try:
            infos = socket.getaddrinfo(self.cfg.host, self.cfg.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise SourceError(f"CLOOSE source: cannot resolve host {self.cfg.host!r}: {exc}") from exc
        self._family, _, _, _, self._addr = infos[0]
        if self.cfg.role == ClooseRole.SERVER:
            lsock = socket.socket(self._family, socket.SOCK_STREAM)
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                lsock.bind(self._addr)
                lsock.listen(2)
            except OSError as exc:
                lsock.close()
                raise SourceError(f"CLOOSE source: cannot listen on {self.cfg.host}:{self.cfg.port}: {exc}") from exc
            lsock.setblocking(False)
            self._listener = lsock
        else:
            self._try_connect(time.monotonic_ns())

    def poll_fds(self) -> list[Any]:
        """The sockets to wait on now (connected sender, connection in progress, listener); call again
        after each :meth:`read`, as the set changes with the link."""
        return [s for s in (self._sock, self._pending, self._listener) if s is not None]

    def close(self) -> None:
        """Close every socket (idempotent)."""
        self._closed = True
        for s in (self._sock, self._pending, self._listener):
            if s is not None:
                s.close()
        self._sock = self._pending = self._listener = None

    # ------------------------------------------------------------------ reading

    def read(self) -> list[RawFrame]:
        """Every complete frame received since the last call; also accepts or (re)connects. Never blocks."""
        if self._closed:
            return []
        frames: list[RawFrame] = []
        # Drain first: a sender that closed and reconnected at once must be seen gone before its new
        # connection is accepted, or that connection would be refused as a second sender.
        self._drain(frames)
        had = self._sock
        now = time.monotonic_ns()
        if self._listener is not None:
            self._accept()
        elif self._sock is None:
            if self._pending is not None:
                self._check_pending(now)
            elif now >= self._next_attempt_ns:
                self._try_connect(now)
        if self._sock is not had:
            self._drain(frames)
        return frames

    def _drain(self, frames: list[RawFrame]) -> None:
        sock = self._sock
        while sock is not None and len(frames) < MAX_FRAMES_PER_READ:
            try:
                n = sock.recv_into(self._view[self._have:], self._frame_bytes - self._have)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._lost(f"connection error: {exc}")
                return
            if n == 0:
                self._lost("sender closed the connection")
                return
            self._have += n
            if self._have == self._frame_bytes:
                frames.append(self._decode(time.monotonic_ns()))
                self._have = 0

    def _decode(self, t_arrive_ns: int) -> RawFrame:
        h, w = self._shape
        flat = np.frombuffer(self._buf, dtype=self._wire)
        # MATLAB's A(line, pixel) lies down each column: as a row-major array it is A transposed.
        img = flat.reshape(w, h).T if self.cfg.element_order == ElementOrder.COLUMN_MAJOR else flat.reshape(h, w)
        data = np.array(img, dtype=self._native, order="C", copy=True)  # always a copy: the buffer is reused
        if self.cfg.invert:
            # ~v is max - v for unsigned types (Scanbox's inversion); for int16 it maps min <-> max.
            np.invert(data, out=data)
        frame = RawFrame(data=data, index=self._index, plane=self._conn_frames % self._planes,
                         t_acq_ns=-1, t_arrive_ns=t_arrive_ns)
        self._index += 1
        self._conn_frames += 1
        self.stats.received += 1
        return frame

    # ------------------------------------------------------------------ the link

    def _adopt(self, sock: socket.socket, peer: str) -> None:
        sock.setblocking(False)
        _keepalive(sock)
        self._sock = sock
        self._have = 0
        self._conn_frames = 0  # a new connection is a new stream, starting at plane 0
        self._connections += 1
        if self._connections > 1:
            self.stats.reconnects += 1
        if self._lost_at_ns >= 0:
            gap = time.monotonic_ns() - self._lost_at_ns
            self.gaps.append((self._index, gap))
            self.stats.last_error = (f"link to the CLOOSE sender was down {gap / 1e9:.3f} s before frame "
                                     f"{self._index}; frames sent meanwhile are lost and uncounted "
                                     f"(reconnected to {peer})")
            self._lost_at_ns = -1

    def _lost(self, why: str) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._have:
            self.stats.malformed += 1  # a partial frame: dropped
            why += f", {self._have} of {self._frame_bytes} bytes of frame {self._index} dropped"
            self._have = 0
        self.stats.disconnects += 1
        self._lost_at_ns = time.monotonic_ns()
        self.stats.last_error = f"CLOOSE link lost after frame {self._index - 1}: {why}"
        self._next_attempt_ns = self._lost_at_ns  # client: try again at once (the sender may be back)

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                conn, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.stats.last_error = f"accept failed: {exc}"
                return
            if self._sock is None:
                self._adopt(conn, f"{peer}")
            else:
                conn.close()  # one sender at a time: a second stream would interleave garbage
                self.stats.refused += 1
                self.stats.last_error = f"refused a second CLOOSE sender from {peer} (one is connected)"

    def _try_connect(self, now: int) -> None:
        try:
            s = socket.socket(self._family, socket.SOCK_STREAM)
        except OSError as exc:  # out of descriptors, say: try again later, read() must not raise
            self._refused(now, f"no socket: {exc}")
            return
        s.setblocking(False)
        err = s.connect_ex(self._addr)
        if err in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
            self._pending, self._pending_since = s, now
            if err == 0:
                self._check_pending(now)
        else:
            s.close()
            self._refused(now, errno.errorcode.get(err, str(err)))

    def _check_pending(self, now: int) -> None:
        s = self._pending
        assert s is not None
        # Writable once connected or failed (Windows reports a failure as an exception condition).
        _, writable, failed = select.select([], [s], [s], 0)
        if not writable and not failed:
            # Still in progress: give up after a few SYN retransmissions (an unreachable host hangs ~2 min).
            if now - self._pending_since > max(3.0, self.cfg.reconnect_s) * 1e9:
                self._pending = None
                s.close()
                self._refused(now, "connection attempt timed out")
            return
        try:
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except OSError as exc:
            err = exc.errno or -1
        self._pending = None
        if err:
            s.close()
            self._refused(now, errno.errorcode.get(err, str(err)))
        else:
            self._adopt(s, f"{self.cfg.host}:{self.cfg.port}")

    def _refused(self, now: int, why: str) -> None:
        self._next_attempt_ns = now + int(self.cfg.reconnect_s * 1e9)
        self.stats.last_error = (f"cannot connect to the CLOOSE sender at {self.cfg.host}:{self.cfg.port} ({why}); "
                                 f"retrying every {self.cfg.reconnect_s} s")


def _keepalive(sock: socket.socket) -> None:
    """Probe an idle link every few seconds: the receiver never sends, so without probes a sender that
    vanished without closing (a crashed or rebooted acquisition PC) would hold the link for hours."""
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", 2), ("TCP_KEEPINTVL", 1), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    for level, opt, value in options:
        with contextlib.suppress(OSError):  # unsupported here: the system's defaults apply
            sock.setsockopt(level, opt, value)
