"""Simulated twins of a Zaber linear stage that speak its ASCII protocol byte for byte.

:class:`ZaberStageModel` is the stage: it reads command lines and answers reply lines, and its position
integrates the commanded velocity over its clock (``time.monotonic`` unless one is injected), stops at
``limit.min``/``limit.max``, homes to 0 and reports BUSY while moving. It rejects what it does not know
with ``RJ ... BADCOMMAND`` and out-of-range values with ``BADDATA``. Acceleration is infinite (the real
stage ramps at its ``accel`` setting). Fault injection for tests lives here, never in the driver.

Two ways to reach it:

- :class:`ZaberTwin`: the model behind a pseudo-terminal served by a background thread; open
  ``.pty_path`` with ``serial.Serial(path, 115200)``, like the valve emulator. Real serial I/O.
- :class:`LoopbackPort`: a pyserial-like object wired straight to the model, in-process, no thread;
  with an injected clock it is deterministic (simulated sessions).
"""

from __future__ import annotations

import logging
import math
import os
import select
import threading
import time
import tty
from collections.abc import Callable

from bcirig.devices.lickport import VELOCITY_SCALE, AxisStatus, ReplyFlag, Setting, ZaberCommand

log = logging.getLogger(__name__)

__all__ = ["LoopbackPort", "ZaberStageModel", "ZaberTwin"]

# An X-LSM025 stage: 25 mm of travel in 0.047625 µm microsteps.
TRAVEL_MICROSTEPS = 524_928
MAXSPEED_LIMIT = 16_000_000  # the largest maxspeed (velocity data) the twin accepts
DEFAULT_MAXSPEED = 344_000  # about 10 mm/s on an X-LSM stage


class ZaberStageModel:
    """One Zaber device with one linear axis, as a state machine on a clock (thread-safe)."""

    def __init__(self, *, device: int = 1, travel_microsteps: int = TRAVEL_MICROSTEPS,
                 start_microsteps: float | None = None, maxspeed: int = DEFAULT_MAXSPEED,
                 clock: Callable[[], float] | None = None) -> None:
        self.device = device
        self.travel_microsteps = int(travel_microsteps)
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._pending = bytearray()
        self.settings: dict[Setting, int] = {
            Setting.LIMIT_MIN: 0, Setting.LIMIT_MAX: self.travel_microsteps, Setting.MAXSPEED: int(maxspeed)}
        # Before homing the position is wherever the carriage was left.
        self._pos = float(self.travel_microsteps // 3 if start_microsteps is None else start_microsteps)
        self._t = self._clock()
        self._velocity = 0.0  # microsteps/s, for velocity moves
        self._target: float | None = None  # for moves to a position (move abs, home)
        self.homed = False
        self._homing = False
        # Fault injection (tests): replace, precede, delay or swallow the next replies.
        self._garble: list[bytes] = []
        self._prefix: list[bytes] = []
        self._drop = 0
        self._hold = 0
        self._held = bytearray()
        self.muted = False
        self.commands_seen = 0

    # ------------------------------------------------------------------------------------ inspection
    def position_microsteps(self) -> float:
        """The carriage's true position now."""
        with self._lock:
            self._advance()
            return self._pos

    @property
    def busy(self) -> bool:
        """True while the carriage moves."""
        with self._lock:
            self._advance()
            return self._moving()

    # ------------------------------------------------------------------------------- fault injection
    def garble_next_reply(self, replacement: bytes = b"@01 1 \x07K\xfe IDLE --\r\n") -> None:
        """Send ``replacement`` instead of the next reply."""
        with self._lock:
            self._garble.append(replacement)

    def precede_next_reply(self, noise: bytes = b"\x00\xfe#\xff noise\r\n") -> None:
        """Send ``noise`` just before the next reply (which follows intact)."""
        with self._lock:
            self._prefix.append(noise)

    def hold_replies(self, n: int = 1) -> None:
        """Hold back the replies to the next ``n`` commands; send them late, just before the reply after them."""
        with self._lock:
            self._hold += n

    def drop_replies(self, n: int = 1) -> None:
        """Act on the next ``n`` commands but send no reply to them."""
        with self._lock:
            self._drop += n

    # ----------------------------------------------------------------------------------------- wire
    def feed(self, data: bytes) -> bytes:
        """Bytes from the host -> the bytes the device sends back (replies to each complete line)."""
        out = bytearray()
        with self._lock:
            self._pending += data
            while True:
                cut = [i for i in (self._pending.find(b"\r"), self._pending.find(b"\n")) if i >= 0]
                if not cut:
                    break
                raw = bytes(self._pending[:min(cut)])
                del self._pending[:min(cut) + 1]
                reply = self._line(raw)
                if reply is None:
                    continue
                self.commands_seen += 1
                if self.muted:
                    continue
                if self._drop:
                    self._drop -= 1
                    continue
                if self._hold:
                    self._hold -= 1
                    self._held += reply
                    continue
                out += self._held
                self._held.clear()
                if self._prefix:
                    out += self._prefix.pop(0)
                out += self._garble.pop(0) if self._garble else reply
        return bytes(out)

    def _line(self, raw: bytes) -> bytes | None:
        """Handle one line; None when the device stays silent (not a command, or not for this device)."""
        try:
            text = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            return None
        if not text.startswith("/"):
            return None
        words = text[1:].split()
        numbers: list[str] = []
        while words and words[0].isdigit() and len(numbers) < 3:
            numbers.append(words.pop(0))
        device = int(numbers[0]) if numbers else 0
        axis = int(numbers[1]) if len(numbers) > 1 else 0
        message_id = numbers[2] if len(numbers) > 2 else None
        if device not in (0, self.device):
            return None
        self._advance()
        if axis not in (0, 1):
            return self._reply(axis, message_id, ReplyFlag.RJ, "BADAXIS")
        flag, data = self._execute(words)
        return self._reply(axis, message_id, flag, data)

    def _reply(self, axis: int, message_id: str | None, flag: ReplyFlag, data: str) -> bytes:
        status = AxisStatus.BUSY if self._moving() else AxisStatus.IDLE
        words = [f"@{self.device:02d}", str(axis), *([message_id] if message_id else []), flag, status, "--", data]
        return (" ".join(words) + "\r\n").encode("ascii")

    # --------------------------------------------------------------------------------------- motion
    def _moving(self) -> bool:
        return self._velocity != 0 or self._target is not None

    def _advance(self) -> None:
        """Integrate the motion up to now."""
        now = self._clock()
        dt, self._t = max(0.0, now - self._t), now
        lo, hi = self.settings[Setting.LIMIT_MIN], self.settings[Setting.LIMIT_MAX]
        if self._target is not None:
            step = self.settings[Setting.MAXSPEED] / VELOCITY_SCALE * dt
            if abs(self._target - self._pos) <= step:
                self._pos, self._target = self._target, None
                if self._homing:
                    self._homing, self.homed = False, True
            else:
                self._pos += math.copysign(step, self._target - self._pos)
        elif self._velocity != 0:
            # A carriage already beyond the limit it heads for (limits changed under it) stays put.
            start, self._pos = self._pos, self._pos + self._velocity * dt
            if self._velocity > 0 and self._pos >= hi:
                self._pos, self._velocity = max(float(hi), start), 0.0
            elif self._velocity < 0 and self._pos <= lo:
                self._pos, self._velocity = min(float(lo), start), 0.0

    def _stop(self) -> None:
        self._velocity, self._target, self._homing = 0.0, None, False

    def _execute(self, words: list[str]) -> tuple[ReplyFlag, str]:
        command, args = _split_command(words)
        if command is None:
            return ReplyFlag.RJ, "BADCOMMAND"
        if command is ZaberCommand.STATUS:
            return (ReplyFlag.OK, "0") if not args else (ReplyFlag.RJ, "BADCOMMAND")
        if command in (ZaberCommand.HOME, ZaberCommand.STOP):
            if args:
                return ReplyFlag.RJ, "BADDATA"
            self._stop()
            if command is ZaberCommand.HOME:
                self._target, self._homing = 0.0, True
            return ReplyFlag.OK, "0"
        if command in (ZaberCommand.GET, ZaberCommand.SET):
            return self._setting(command, args)
        value = _integer(args)
        if value is None:
            return ReplyFlag.RJ, "BADDATA"
        if command is ZaberCommand.MOVE_ABS:
            if not self.settings[Setting.LIMIT_MIN] <= value <= self.settings[Setting.LIMIT_MAX]:
                return ReplyFlag.RJ, "BADDATA"
            self._stop()
            self._target = float(value)
            return ReplyFlag.OK, "0"
        # move vel: at most maxspeed either way
        if abs(value) > self.settings[Setting.MAXSPEED]:
            return ReplyFlag.RJ, "BADDATA"
        self._stop()
        self._velocity = value / VELOCITY_SCALE
        self._advance()  # already at the limit it is heading for: stops at once
        return ReplyFlag.OK, "0"

    def _setting(self, command: ZaberCommand, args: list[str]) -> tuple[ReplyFlag, str]:
        try:
            setting = Setting(args[0]) if args else None
        except ValueError:
            setting = None
        if setting is None:
            return ReplyFlag.RJ, "BADCOMMAND"
        if command is ZaberCommand.GET:
            if len(args) != 1:
                return ReplyFlag.RJ, "BADDATA"
            value = round(self._pos) if setting is Setting.POS else self.settings[setting]
            return ReplyFlag.OK, str(value)
        new = _integer(args[1:])
        if new is None or setting is Setting.POS:
            return ReplyFlag.RJ, "BADDATA"
        valid = {
            Setting.LIMIT_MIN: 0 <= new <= self.settings[Setting.LIMIT_MAX],
            Setting.LIMIT_MAX: self.settings[Setting.LIMIT_MIN] <= new <= self.travel_microsteps,
            Setting.MAXSPEED: 1 <= new <= MAXSPEED_LIMIT,
        }[setting]
        if not valid:
            return ReplyFlag.RJ, "BADDATA"
        self.settings[setting] = new
        return ReplyFlag.OK, "0"


def _split_command(words: list[str]) -> tuple[ZaberCommand | None, list[str]]:
    """The longest known command at the start of ``words``, and the words after it."""
    for command in sorted(ZaberCommand, key=lambda c: -len(c.value)):
        n = len(command.value.split())
        if words[:n] == command.value.split():
            return command, words[n:]
    return None, words


def _integer(args: list[str]) -> int | None:
    if len(args) != 1 or not args[0].lstrip("-").isdigit():
        return None
    return int(args[0])


class LoopbackPort:
    """A pyserial-like port wired straight to a :class:`ZaberStageModel` (in-process, no thread)."""

    def __init__(self, model: ZaberStageModel, name: str = "simulated Zaber stage") -> None:
        self.model = model
        self.port = name
        self.timeout: float | None = 0.02
        self.is_open = True
        self._rx = bytearray()

    def write(self, data: bytes) -> int:
        """Hand the bytes to the stage; its replies wait to be read."""
        if not self.is_open:
            raise OSError(f"{self.port}: port is closed")
        self._rx += self.model.feed(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered on the way out."""

    @property
    def in_waiting(self) -> int:
        """Bytes ready to read."""
        return len(self._rx)

    def read(self, size: int = 1) -> bytes:
        """Up to ``size`` bytes; with nothing to read, waits ``timeout`` (a silent device) and returns b''."""
        if not self.is_open:
            raise OSError(f"{self.port}: port is closed")
        if not self._rx:
            if self.timeout:
                time.sleep(self.timeout)
            return b""
        out, self._rx = bytes(self._rx[:size]), self._rx[size:]
        return out

    def close(self) -> None:
        """Close; further reads and writes raise OSError."""
        self.is_open = False


class ZaberTwin:
    """A :class:`ZaberStageModel` on a pseudo-terminal, as a context manager.

    >>> with ZaberTwin() as twin:
    ...     port = serial.Serial(twin.pty_path, 115200)
    """

    def __init__(self, model: ZaberStageModel | None = None) -> None:
        self.model = model or ZaberStageModel()
        self.pty_path = ""
        self._master = self._slave = -1
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self) -> ZaberTwin:
        """Open the pty and start serving it."""
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no CR/LF translation: the bytes on the wire are the protocol's
        self.pty_path = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="zaber-twin", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        while True:
            ready, _, _ = select.select([self._master, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            try:
                data = os.read(self._master, 4096)
            except OSError:  # the pty went away
                return
            try:
                out = memoryview(self.model.feed(data))
            except Exception:  # a twin bug must not look like a silent stage
                log.exception("zaber twin on %s: the model failed on %r; the twin stops answering", self.pty_path,
                              data[:80])
                return
            while out:
                out = out[os.write(self._master, out):]

    def close(self) -> None:
        """Stop serving and close the pty; safe to call twice."""
        if self._thread is None or self._stopping:
            return
        self._stopping = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=2.0)
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            os.close(fd)

    def __enter__(self) -> ZaberTwin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
