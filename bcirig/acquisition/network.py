"""Frames from a sender on the acquisition PC: the bcirig frame protocol (``PROTOCOL.md``) over ZeroMQ or TCP.

:class:`NetworkSource` only decodes bytes into :class:`RawFrame` objects and counts what it could not
decode; shapes, dtypes and index gaps are checked by the assembler, like every source's frames.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from bcirig.acquisition import wire
from bcirig.acquisition.base import RawFrame, SourceError, SourceStats
from bcirig.config import LOOPBACK, Framing, NetworkSourceConfig

LOG = logging.getLogger(__name__)
RCVHWM = 1000  # messages queued before ZeroMQ pushes back on the sender: ~30 s at 30 Hz, ~0.8 GB of 512x796 uint16
SCAN_CHUNK = 65536  # bytes read at a time while searching a garbage run for the next magic
# bounded work per read() so the node's heartbeats and ticks go on under a flood; what is left keeps the
# socket readable, so the node's poll returns at once and the next read() carries on
MAX_MESSAGES_PER_READ = 256
MAX_RECVS_PER_READ = 4096
_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
_MONITORED = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | _HANDSHAKE_FAILED


def _in_use(port: int, host: str) -> SourceError:
    return SourceError(f"port {port} on {host} is in use (another session or program?)")


class NetworkSource:
    """The rig end of the bcirig frame protocol: a ZeroMQ PULL socket or a plain TCP listener.

    Free-running: the node polls :meth:`poll_fds` and calls :meth:`read`. With TCP framing the list of
    fds changes when a sender connects or leaves, so call :meth:`poll_fds` again after every read.
    """

    paced = False
    poll_interval_s = 0.05

    def __init__(self, cfg: NetworkSourceConfig, base_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.base_dir = Path.cwd() if base_dir is None else Path(base_dir)  # key paths are relative to it
        self.stats = SourceStats()
        self._link: _ZmqLink | _TcpLink | None = None

    def open(self) -> None:
        """Bind (and start the CurveZMQ authenticator off loopback); :class:`SourceError` if that fails."""
        if self._link is None:
            self._link = (_ZmqLink(self.cfg, self.base_dir, self.stats) if self.cfg.framing == Framing.ZMQ
                          else _TcpLink(self.cfg, self.stats))

    def poll_fds(self) -> list[Any]:
        """The sockets that become readable when bytes or connections arrive."""
        return [] if self._link is None else self._link.poll_fds()

    def read(self) -> list[RawFrame]:
        """The complete frames received since the last call (never blocks; a flood is taken in batches)."""
        return [] if self._link is None else self._link.read()

    def close(self) -> None:
        """Close sockets, context and authenticator (idempotent)."""
        if self._link is not None:
            self._link.close()
            self._link = None


def _load_key(path: Path, *, secret: bool) -> tuple[bytes, bytes | None]:
    """A CurveZMQ certificate file's (public, secret) keys; SourceError naming the file if unusable."""
    try:
        public, secret_key = zmq.auth.load_certificate(path)
        for key in (public, secret_key) if secret else (public,):
            if key is None or len(key) != 40 or len(z85.decode(key)) != 32:
                raise ValueError("no valid 40-character Z85 key in it")
    except (OSError, ValueError) as exc:
        kind = "secret key file (`bcirig keys NAME` makes NAME.key_secret)" if secret else "public key file"
        raise SourceError(f"{path}: not a usable CurveZMQ {kind}: {exc}") from None
    return public, secret_key


class _ZmqLink:
    """PULL socket; off loopback a CurveZMQ server admitting only the listed public keys."""

    def __init__(self, cfg: NetworkSourceConfig, base_dir: Path, stats: SourceStats) -> None:
        self.stats = stats
        host = "127.0.0.1" if cfg.bind == "localhost" else cfg.bind
        self.endpoint = f"tcp://[{host}]:{cfg.port}" if ":" in host else f"tcp://{host}:{cfg.port}"
        self.ctx = zmq.Context()
        self.auth: ThreadAuthenticator | None = None
        self.refused_key = "(unknown)"  # written by the authenticator's thread: the newest unlisted key
        self.connections = self.disconnected = self.failed = 0
        self.sock = self.ctx.socket(zmq.PULL)
        self.monitor: zmq.Socket[bytes] | None = None
        try:
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.setsockopt(zmq.RCVHWM, RCVHWM)
            self.sock.setsockopt(zmq.IPV6, int(":" in host))
            if cfg.bind not in LOOPBACK:
                self._secure(cfg, base_dir)
            # the monitor tells connections, disconnections and refused handshakes apart
            self.monitor = self.sock.get_monitor_socket(_MONITORED)
            self.sock.bind(self.endpoint)
        except zmq.ZMQError as exc:
            self.close()
            if exc.errno == zmq.EADDRINUSE:
                raise _in_use(cfg.port, cfg.bind) from None
            raise SourceError(f"cannot listen on {self.endpoint}: {exc}") from None
        except BaseException:
            self.close()
            raise

    def _secure(self, cfg: NetworkSourceConfig, base_dir: Path) -> None:
        public, secret = _load_key(base_dir / cfg.secret_key, secret=True)
        # the allowed set is built from exactly the listed files (not a directory: a stray key file there
        # would let its owner in)
        allowed = {_load_key(base_dir / f, secret=False)[0] for f in cfg.allowed_keys}
        self.sock.curve_secretkey = secret
        self.sock.curve_publickey = public
        self.sock.curve_server = True
        self.auth = ThreadAuthenticator(self.ctx)
        self.auth.start()

        link = self

        class _Listed:  # pyzmq's credentials provider: asked (in the auth thread) about every client key
            def callback(self, domain: str, key: bytes) -> bool:
                if key not in allowed:
                    link.refused_key = key.decode("ascii", "replace")
                return key in allowed

        self.auth.configure_curve_callback("*", credentials_provider=_Listed())

    def poll_fds(self) -> list[Any]:
        return [self.sock] if self.monitor is None else [self.sock, self.monitor]

    def read(self) -> list[RawFrame]:
        frames: list[RawFrame] = []
        for _ in range(MAX_MESSAGES_PER_READ):
            try:
                parts = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            frame = self._decode(parts, time.monotonic_ns())
            if frame is not None:
                frames.append(frame)
        self._drain_monitor()
        return frames

    def _decode(self, parts: list[zmq.Frame], t_arrive_ns: int) -> RawFrame | None:
        try:
            if len(parts) != 2:
                raise wire.FrameWireError(f"a message of {len(parts)} parts (a frame is 2: header, pixels)")
            head = wire.unpack_header(parts[0].buffer)
            payload = parts[1].buffer  # zero-copy: the image is a view of ZeroMQ's message (read-only)
            if len(payload) != head.payload_bytes:
                raise wire.FrameWireError(f"{len(payload)} bytes of pixels, the header says {head.payload_bytes}")
        except wire.FrameWireError as exc:
            self.stats.malformed += 1
            self.stats.last_error = f"{self.endpoint}: skipped a message: {exc}"
            return None
        self.stats.received += 1
        return RawFrame(wire.pixels(head, payload), head.index, head.plane, head.t_acq_ns, t_arrive_ns)

    def _drain_monitor(self) -> None:
        while self.monitor is not None:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)["event"]
            except zmq.Again:
                return
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.connections += 1
                self.stats.reconnects = max(0, self.connections - 1)
            elif event & _HANDSHAKE_FAILED:
                self.failed += 1
                if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:  # the authenticator said no
                    why = f"a sender whose CurveZMQ public key {self.refused_key} is not in allowed_keys"
                else:  # no keys, or not the rig's public key (or not ZeroMQ at all)
                    why = "a connection that failed the handshake (no CurveZMQ keys, or a wrong --server-key?)"
                if self.auth is not None:
                    self.stats.refused += 1
                else:
                    self.stats.malformed += 1
                self.stats.last_error = f"{self.endpoint}: refused {why}"
            elif event == zmq.EVENT_DISCONNECTED:
                # every connection ends with one DISCONNECTED, refused ones too: only the others count
                self.disconnected += 1
                self.stats.disconnects = max(self.stats.disconnects, self.disconnected - self.failed)

    def close(self) -> None:
        if self.monitor is not None:
            self.sock.disable_monitor()
            self.monitor.close(linger=0)
            self.monitor = None
        self.sock.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
            self.auth = None
        self.ctx.term()


class _Later(Exception):
    """This read's budget is spent: the rest waits for the next read()."""


class _TcpLink:
    """A listening TCP socket, one sender at a time; header and pixels, again and again, on one stream."""

    def __init__(self, cfg: NetworkSourceConfig, stats: SourceStats) -> None:
        self.stats = stats
        self.where = f"{cfg.bind}:{cfg.port}"
        self.lsock = socket.socket(socket.AF_INET6 if ":" in cfg.bind else socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebind at once after a session
            self.lsock.bind((cfg.bind, cfg.port))
            self.lsock.listen(4)
            self.lsock.setblocking(False)
        except OSError as exc:
            self.lsock.close()
            if exc.errno == errno.EADDRINUSE:
                raise _in_use(cfg.port, cfg.bind) from None
            raise SourceError(f"cannot listen on {self.where}: {exc.strerror or exc}") from None
        if cfg.bind not in LOOPBACK:
            LOG.warning("plain TCP framing without authentication on %s: anyone who can reach it can send frames",
                        self.where)
        self.conn: socket.socket | None = None
        self.peer = ""
        self.connections = 0
        self.head = bytearray(wire.HEADER_BYTES)
        self.head_view = memoryview(self.head)
        self.chunk_view = memoryview(bytearray(SCAN_CHUNK))
        self.budget = MAX_RECVS_PER_READ
        self._reset()

    def _reset(self) -> None:
        self.head_got = 0
        self.header: wire.FrameHeader | None = None
        self.payload = np.empty(0, np.uint8)
        self.payload_view = self.payload.data
        self.got = 0
        self.pending = bytearray()  # bytes read while scanning garbage, not yet consumed
        self.scanning = False  # searching the stream for the next magic
        self.garbage = False  # in a garbage run already counted as malformed

    def poll_fds(self) -> list[Any]:
        return [self.lsock] if self.conn is None else [self.lsock, self.conn]

    def read(self) -> list[RawFrame]:
        frames: list[RawFrame] = []
        self.budget = MAX_RECVS_PER_READ
        self._drain(frames)
        while True:
            try:
                new, addr = self.lsock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # out of file descriptors and the like: try again on the next read
                self.stats.last_error = f"{self.where}: cannot accept a connection: {exc}"
                break
            self._drain(frames)  # the current sender may have just left (its EOF not read yet)
            if self.conn is not None:
                new.close()
                self.stats.refused += 1
                self.stats.last_error = f"{self.where}: refused a second sender {addr} while {self.peer} sends"
                continue
            new.setblocking(False)
            # keepalive probes find a sender PC that vanished without closing (power, cable) in ~11 s, instead
            # of its dead connection refusing the sender's next one for hours
            new.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for opt, value in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3)):
                if hasattr(socket, opt):
                    new.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
            self.conn, self.peer = new, str(addr)
            self.connections += 1
            self.stats.reconnects = self.connections - 1
            self._drain(frames)
        return frames

    def _recv_into(self, view: memoryview) -> int:
        """Fill the start of ``view`` from the scanned bytes first, then from the socket."""
        if self.pending:
            n = min(len(view), len(self.pending))
            view[:n] = self.pending[:n]
            del self.pending[:n]
            return n
        return self._recv_socket(view)

    def _recv_socket(self, view: memoryview) -> int:
        if self.budget <= 0:
            raise _Later
        self.budget -= 1
        assert self.conn is not None
        n = self.conn.recv_into(view)
        if n == 0:
            raise EOFError
        return n

    def _drain(self, frames: list[RawFrame]) -> None:
        while self.conn is not None:
            try:
                if self.scanning:
                    self._scan()
                elif self.header is None:
                    self.head_got += self._recv_into(self.head_view[self.head_got:])
                    if self.head_got == wire.HEADER_BYTES:
                        self._parse_header()
                else:
                    self.got += self._recv_into(self.payload_view[self.got:])
                    if self.got == len(self.payload):
                        frames.append(self._finish())
            except (BlockingIOError, InterruptedError, _Later):
                return
            except (EOFError, OSError) as exc:
                self._lost(exc)

    def _parse_header(self) -> None:
        try:
            head = wire.unpack_header(self.head_view)
        except wire.FrameWireError as exc:
            if not self.garbage:  # one count per garbage run, however long
                self.garbage = True
                self.stats.malformed += 1
                self.stats.last_error = f"{self.where}: {exc}; searching the stream for the next BCIF"
            self.pending[:0] = self.head[1:]  # the magic may start anywhere after the first byte
            self.head_got = 0
            self.scanning = True
            return
        self.garbage = False
        self.header = head
        # the pixels go straight from the socket into the frame's own buffer: no copy after the kernel's
        self.payload = np.empty(head.payload_bytes, np.uint8)
        self.payload_view = self.payload.data
        self.got = 0

    def _scan(self) -> None:
        at = self.pending.find(wire.MAGIC)
        if at >= 0:
            del self.pending[:at]
            self.scanning = False
            return
        keep = next((k for k in (3, 2, 1) if self.pending.endswith(wire.MAGIC[:k])), 0)  # a split magic
        del self.pending[:len(self.pending) - keep]
        n = self._recv_socket(self.chunk_view)
        self.pending += self.chunk_view[:n]

    def _finish(self) -> RawFrame:
        t_arrive_ns = time.monotonic_ns()
        head = self.header
        assert head is not None
        data = wire.pixels(head, self.payload_view)
        self.header, self.head_got = None, 0
        self.stats.received += 1
        return RawFrame(data, head.index, head.plane, head.t_acq_ns, t_arrive_ns)

    def _lost(self, exc: BaseException) -> None:
        partial = self.head_got > 0 or self.header is not None or (self.scanning and bool(self.pending))
        if partial and not self.garbage:
            self.stats.malformed += 1
        why = "closed the connection" if isinstance(exc, EOFError) else f"was lost ({exc})"
        self.stats.last_error = f"{self.where}: sender {self.peer} {why}" + (
            ", dropping its unfinished frame" if partial else "")
        self.stats.disconnects += 1
        assert self.conn is not None
        self.conn.close()
        self.conn = None
        self._reset()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.lsock.close()
