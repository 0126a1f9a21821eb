"""The motorised lickport: a Zaber linear stage driven over Zaber's ASCII serial protocol.

The driver *has* a port (pyserial-like: ``write``, ``read``, ``in_waiting``), passed in. Public methods
validate, convert millimetres to the stage's microsteps with the rig's microstep size, clamp to the rig's
limits and log; the private ``_do_*`` methods each send one command line and read its reply.

Safety is written into the stage itself: before the first motion the driver sets the device's
``limit.min``, ``limit.max`` and ``maxspeed`` from the rig file (:meth:`ZaberLickport.apply_limits`), so
a velocity move toward the mouse ends at the limit in the stage's firmware even if the host falls
silent. Those are persistent Zaber settings: the stage keeps them after power-off.

Wire format (Zaber ASCII)::

    /1 1 7 move vel 68813\\n          device 1, axis 1, message id 7
    @01 1 7 OK BUSY -- 0\\r\\n          device, axis, id, OK|RJ, BUSY|IDLE, warning flag ('--' none), data

Every command sent carries a message id (0-99), so a late reply to an earlier command is recognised and
ignored. Every command is absolute (``move abs``, ``move vel``, ``stop``, ``home``, ``get``, ``set``;
never ``move rel``), so re-sending one after a lost reply never moves the stage twice as far.

Single-threaded use from a node loop::

    with open_lickport(rig.lickport) as lickport:    # bcirig.devices.open_lickport
        lickport.home()                              # blocks until the stage is at 0
        lickport.set_speed(gain * readout)           # each frame; one round trip, the stage keeps moving
        position = lickport.position_mm()            # each frame, to record

A node that must never wait on the stage uses the same commands without waiting for their replies:
:meth:`ZaberLickport.request_move_to` and :meth:`ZaberLickport.request_status` write one command each and
return; :meth:`ZaberLickport.poll_replies` reads what has arrived (wake on :meth:`ZaberLickport.fileno`),
re-sends a command whose reply is overdue (same message id, as the blocking calls do) and returns the
position reports in the order they were asked for. A blocking call abandons the requests in flight.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Self

from bcirig.devices.lineio import SerialLineIO

log = logging.getLogger(__name__)

__all__ = ["VELOCITY_SCALE", "AxisStatus", "LickportError", "LickportStatus", "ReplyFlag", "Setting",
           "ZaberCommand", "ZaberLickport", "ZaberReply", "format_command", "parse_reply"]

# Zaber speeds (the maxspeed setting, `move vel`) are in units of 1/1.6384 microsteps per second.
VELOCITY_SCALE = 1.6384
MESSAGE_ID_MAX = 99

# What the usual rejection reasons mean, for the error message (the reply's own word is always shown).
_REJECTIONS = {
    "BADDATA": "a value outside what the stage accepts (beyond limit.min/limit.max, or too fast)",
    "BADCOMMAND": "a command or setting the stage does not know",
    "BADAXIS": "no such axis on this device; check lickport.axis",
    "DEVICEONLY": "a command for the whole device, sent to an axis",
    "PARKED": "the stage is parked; unpark it (`/1 tools parking unpark`)",
}


class LickportError(RuntimeError):
    """The stage cannot be reached, refused a command (RJ), or answered something that is not a reply."""


class ReplyFlag(enum.StrEnum):
    """Whether the device accepted the command."""

    OK = "OK"
    RJ = "RJ"


class AxisStatus(enum.StrEnum):
    """Whether the axis is moving."""

    BUSY = "BUSY"
    IDLE = "IDLE"


class ZaberCommand(enum.StrEnum):
    """The ASCII commands bcirig uses (the twin answers these and rejects the rest)."""

    STATUS = ""  # an empty command: the reply carries the axis status
    HOME = "home"
    STOP = "stop"
    MOVE_ABS = "move abs"
    MOVE_VEL = "move vel"
    GET = "get"
    SET = "set"


class Setting(enum.StrEnum):
    """Device settings the driver reads or writes."""

    POS = "pos"
    MAXSPEED = "maxspeed"
    LIMIT_MIN = "limit.min"
    LIMIT_MAX = "limit.max"


@dataclass(frozen=True)
class ZaberReply:
    """One reply line, parsed."""

    device: int
    axis: int
    message_id: int | None
    flag: ReplyFlag
    status: AxisStatus
    warning: str  # the highest-priority warning flag, '--' for none
    data: str
    line: str

    @property
    def ok(self) -> bool:
        """True when the command was accepted."""
        return self.flag is ReplyFlag.OK

    @property
    def busy(self) -> bool:
        """True while the axis moves."""
        return self.status is AxisStatus.BUSY


@dataclass(frozen=True)
class LickportStatus:
    """Where the stage is and whether it moves, from one reply."""

    position_mm: float
    busy: bool
    warning: str  # '--' when the stage reports nothing
    t_ns: int  # time.monotonic_ns() when the reply was read


@dataclass
class _Request:
    """A command written without waiting for its reply (see ZaberLickport.poll_replies)."""

    line: bytes
    sent: str
    is_status: bool
    deadline: float
    attempts: int = 1


_REPLY = re.compile(r"@(\d{2}) (\d) (?:(\d{1,2}) )?(OK|RJ) (BUSY|IDLE) ([A-Z-]{2}) (\S(?:.*\S)?)")


def parse_reply(line: str) -> ZaberReply:
    """Parse one reply line (without its line ending); ValueError if it is not exactly a Zaber reply."""
    m = _REPLY.fullmatch(line)
    if m is None:
        raise ValueError(f"not a Zaber ASCII reply: {line!r}")
    device, axis, message_id, flag, status, warning, data = m.groups()
    return ZaberReply(int(device), int(axis), None if message_id is None else int(message_id), ReplyFlag(flag),
                      AxisStatus(status), warning, data, line)


def format_command(device: int, axis: int, message_id: int | None, command: str) -> bytes:
    """One command line, e.g. ``/1 1 7 get pos\\n``."""
    words = [f"/{device}", str(axis), *([] if message_id is None else [str(message_id)]), *command.split()]
    return (" ".join(words) + "\n").encode("ascii")


def _finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


class ZaberLickport(SerialLineIO):
    """Driver for a Zaber linear stage carrying the lickport, on a pyserial-like port.

    Positions are millimetres from the home sensor (0 = fully retracted) and grow as the stage extends,
    toward the mouse; speeds are signed mm/s (+ toward the mouse). ``um_per_microstep`` is the stage
    model's microstep size (0.047625 µm for many X-LSM stages). Moves outside ``[min_mm, max_mm]`` and
    speeds above ``max_speed_mm_s`` are clamped (logged), and the stage holds the same limits itself.

    Each command waits ``timeout_s`` for its reply and is re-sent up to ``retries`` times with the same
    message id; :meth:`home` and :meth:`wait_idle` wait up to ``move_timeout_s`` for the motion to end.
    Not thread-safe: one loop owns it.
    """

    error = LickportError

    def __init__(self, port: Any, *, um_per_microstep: float, min_mm: float, max_mm: float,
                 max_speed_mm_s: float, device: int = 1, axis: int = 1, timeout_s: float = 0.25,
                 retries: int = 2, move_timeout_s: float = 60.0, velocity_scale: float = VELOCITY_SCALE) -> None:
        if not (math.isfinite(um_per_microstep) and um_per_microstep > 0):
            raise ValueError(f"um_per_microstep (the stage's microstep size) must be > 0, got {um_per_microstep!r}")
        if not (math.isfinite(min_mm) and math.isfinite(max_mm) and 0 <= min_mm < max_mm):
            raise ValueError(f"lickport limits must satisfy 0 <= min_mm < max_mm, got min_mm={min_mm!r}, "
                             f"max_mm={max_mm!r}")
        if not (math.isfinite(max_speed_mm_s) and max_speed_mm_s > 0):
            raise ValueError(f"max_speed_mm_s must be > 0, got {max_speed_mm_s!r}")
        if not (1 <= device <= 99 and 1 <= axis <= 9):
            raise ValueError(f"Zaber device must be in [1, 99] and axis in [1, 9], got {device}, {axis}")
        if timeout_s <= 0 or retries < 0 or move_timeout_s <= 0:
            raise ValueError(f"timeout_s and move_timeout_s must be > 0 and retries >= 0, got {timeout_s}, "
                             f"{move_timeout_s}, {retries}")
        self._port = port
        self.device, self.axis = int(device), int(axis)
        self.um_per_microstep = float(um_per_microstep)
        self.min_mm, self.max_mm, self.max_speed_mm_s = float(min_mm), float(max_mm), float(max_speed_mm_s)
        self.velocity_scale = float(velocity_scale)
        self.timeout_s, self.retries, self.move_timeout_s = float(timeout_s), int(retries), float(move_timeout_s)
        where = getattr(port, "port", None) or getattr(port, "name", None) or repr(port)
        self.name = f"lickport (Zaber device {self.device} axis {self.axis}) on {where}"
        # The device's limits in microsteps, inside the rig's millimetre limits after rounding.
        self.min_microsteps = math.ceil(self.min_mm * 1000 / self.um_per_microstep - 1e-9)
        self.max_microsteps = math.floor(self.max_mm * 1000 / self.um_per_microstep + 1e-9)
        self.max_speed_data = math.floor(self.max_speed_mm_s * 1000 / self.um_per_microstep * self.velocity_scale)
        if self.max_speed_data < 1:
            raise ValueError(f"max_speed_mm_s={max_speed_mm_s} is below the stage's smallest speed")
        self._message_id = 0
        self._buf = bytearray()
        self._limits_applied = False
        self._warning = "--"
        self._speed_clamps = 0
        self._closed = False
        self._requests: OrderedDict[int, _Request] = OrderedDict()
        with contextlib.suppress(AttributeError, ValueError):
            port.timeout = min(0.02, self.timeout_s)

    # ------------------------------------------------------------------------------------ conversions
    def mm_to_microsteps(self, mm: float) -> int:
        """Millimetres -> the nearest whole microstep."""
        return round(mm * 1000 / self.um_per_microstep)

    def microsteps_to_mm(self, microsteps: float) -> float:
        """Microsteps -> millimetres."""
        return microsteps * self.um_per_microstep / 1000

    def speed_to_data(self, mm_s: float) -> int:
        """Signed mm/s -> Zaber velocity data (microsteps/s x 1.6384)."""
        return round(mm_s * 1000 / self.um_per_microstep * self.velocity_scale)

    # ------------------------------------------------------------------------------------ public API
    def apply_limits(self) -> None:
        """Write the rig's limits and top speed into the stage, so its firmware enforces them."""
        self._do_set(Setting.LIMIT_MIN, self.min_microsteps)
        self._do_set(Setting.LIMIT_MAX, self.max_microsteps)
        self._do_set(Setting.MAXSPEED, self.max_speed_data)
        self._limits_applied = True
        log.info("%s: limits %.4f..%.4f mm (%d..%d microsteps), max speed %.3f mm/s", self.name, self.min_mm,
                 self.max_mm, self.min_microsteps, self.max_microsteps, self.max_speed_mm_s)

    def home(self, *, wait: bool = True) -> float:
        """Retract to the home sensor, which becomes position 0; with ``wait``, return once there."""
        self._ensure_limits()
        self._do_home()
        log.info("%s: homing", self.name)
        return self.wait_idle() if wait else self.position_mm()

    def move_to(self, mm: float, *, wait: bool = False) -> float:
        """Move to ``mm`` (clamped to [min_mm, max_mm]) at the top speed; returns the target used."""
        target, steps = self._target_steps(mm)
        self._ensure_limits()
        self._do_move_abs(steps)
        log.debug("%s: move to %.4f mm (%d microsteps)", self.name, target, steps)
        if wait:
            self.wait_idle()
        return self.microsteps_to_mm(steps)

    def _target_steps(self, mm: float) -> tuple[float, int]:
        """``mm`` clamped to the limits (logged), and the whole microstep inside them nearest to it."""
        target = _finite("lickport position (mm)", mm)
        if not self.min_mm <= target <= self.max_mm:
            clamped = min(max(target, self.min_mm), self.max_mm)
            log.warning("%s: move to %.4f mm clamped to %.4f mm (limits %.4f..%.4f mm)", self.name, target,
                        clamped, self.min_mm, self.max_mm)
            target = clamped
        return target, min(max(self.mm_to_microsteps(target), self.min_microsteps), self.max_microsteps)

    def set_speed(self, mm_s: float) -> float:
        """Move at ``mm_s`` (signed, + toward the mouse; clamped to ±max_speed_mm_s; 0 stops) until a limit.

        Returns the speed commanded. The stage stops by itself at min_mm or max_mm.
        """
        speed = _finite("lickport speed (mm/s)", mm_s)
        if abs(speed) > self.max_speed_mm_s:
            self._speed_clamps += 1
            log.log(logging.WARNING if self._speed_clamps == 1 else logging.DEBUG,
                    "%s: speed %.3f mm/s clamped to ±%.3f mm/s (clamp #%d)", self.name, speed, self.max_speed_mm_s,
                    self._speed_clamps)
            speed = math.copysign(self.max_speed_mm_s, speed)
        data = max(-self.max_speed_data, min(self.max_speed_data, self.speed_to_data(speed)))
        self._ensure_limits()
        if data == 0:
            self._do_stop()
            return 0.0
        self._do_move_vel(data)
        log.debug("%s: speed %.4f mm/s (data %d)", self.name, speed, data)
        return data / self.velocity_scale * self.um_per_microstep / 1000

    def stop(self) -> None:
        """Stop now (the stage decelerates at its own rate)."""
        self._do_stop()
        log.debug("%s: stop", self.name)

    def position_mm(self) -> float:
        """Where the stage is now, in mm."""
        return self.status().position_mm

    def status(self) -> LickportStatus:
        """Position, moving or not, and the stage's warning flag, from one round trip."""
        microsteps, reply, t_ns = self._do_get_pos()
        return LickportStatus(self.microsteps_to_mm(microsteps), reply.busy, reply.warning, t_ns)

    def wait_idle(self, timeout_s: float | None = None, poll_s: float = 0.01) -> float:
        """Ask for the position every ``poll_s`` until the stage stops; returns where it stopped (mm)."""
        limit = self.move_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        while True:
            status = self.status()
            if not status.busy:
                return status.position_mm
            if time.monotonic() >= deadline:
                raise LickportError(f"{self.name}: still moving after {limit:.1f} s (at {status.position_mm:.4f} mm)"
                                    ". Is the stage blocked, or move_timeout_s too short for the travel?")
            time.sleep(poll_s)

    # ------------------------------------------------------------------- without waiting for replies
    def fileno(self) -> int | None:
        """The port's file descriptor (a poller wakes on it when a reply arrives); None if it has none."""
        fileno = getattr(self._port, "fileno", None)
        try:
            fd = fileno() if callable(fileno) else None
        except (OSError, ValueError):
            return None
        return fd if isinstance(fd, int) and fd >= 0 else None

    def request_move_to(self, mm: float) -> float:
        """As :meth:`move_to` (same clamping), but return once the command is written; returns the target.

        The reply comes back through :meth:`poll_replies`, which raises if the stage refused the move.
        """
        target, steps = self._target_steps(mm)
        self._ensure_limits()
        self._request(f"{ZaberCommand.MOVE_ABS} {steps}", is_status=False)
        log.debug("%s: move to %.4f mm (%d microsteps), reply awaited", self.name, target, steps)
        return self.microsteps_to_mm(steps)

    def request_status(self) -> None:
        """Ask where the stage is; the answer comes back as a LickportStatus from :meth:`poll_replies`."""
        self._request(f"{ZaberCommand.GET} {Setting.POS}", is_status=True)

    @property
    def in_flight(self) -> int:
        """Commands written whose replies have not arrived."""
        return len(self._requests)

    @property
    def statuses_in_flight(self) -> int:
        """Position requests whose replies have not arrived."""
        return sum(r.is_status for r in self._requests.values())

    def reply_deadline(self) -> float | None:
        """When the oldest request in flight is overdue (time.monotonic()); None with nothing in flight."""
        return min((r.deadline for r in self._requests.values()), default=None)

    def poll_replies(self) -> list[LickportStatus]:
        """Read the replies that have arrived, never waiting; the position reports, in the order asked.

        A request whose reply is ``timeout_s`` overdue is re-sent with its message id (at most ``retries``
        times); after that, or when the stage refuses a command, LickportError names the command.
        """
        out: list[LickportStatus] = []
        if self._closed:
            raise self._fail("used after close()")
        self._read(block=False)
        while (raw := self._take_line()) is not None:
            reply = self._match_request(raw)
            if reply is None:
                continue
            request = self._requests.pop(int(reply.message_id or 0))
            self._note_warning(reply)
            if not reply.ok:
                raise self._refused(request.sent, reply)
            if request.is_status:
                try:
                    microsteps = int(reply.data)
                except ValueError:
                    raise LickportError(f"{self.name}: reply to get pos carries no whole number of microsteps: "
                                        f"{reply.line!r}") from None
                out.append(LickportStatus(self.microsteps_to_mm(microsteps), reply.busy, reply.warning,
                                          time.monotonic_ns()))
        now = time.monotonic()
        for request in self._requests.values():
            if now < request.deadline:
                continue
            if request.attempts > self.retries:
                raise self._fail(
                    f"no reply to {request.sent!r} after {request.attempts} attempt(s), timeout "
                    f"{self.timeout_s * 1e3:.0f} ms each. Check the cable and power, lickport.port, lickport.device "
                    f"({self.device}) and lickport.axis ({self.axis})")
            log.warning("%s: no reply to %r within %.0f ms (attempt %d of %d)", self.name, request.sent,
                        self.timeout_s * 1e3, request.attempts, self.retries + 1)
            self._write(request.line)
            request.attempts += 1
            request.deadline = now + self.timeout_s
        return out

    def _request(self, command: str, *, is_status: bool) -> None:
        if self._closed:
            raise self._fail("used after close()")
        if len(self._requests) >= MESSAGE_ID_MAX - 1:
            raise self._fail(f"{len(self._requests)} commands in flight without replies; is the stage answering?")
        self._message_id = self._message_id % MESSAGE_ID_MAX + 1
        while self._message_id in self._requests:  # never reuse an id still in flight
            self._message_id = self._message_id % MESSAGE_ID_MAX + 1
        line = format_command(self.device, self.axis, self._message_id, command)
        self._write(line)
        self._requests[self._message_id] = _Request(line, line.decode("ascii").strip(), is_status,
                                                    time.monotonic() + self.timeout_s)

    def _parse(self, raw: bytes, to: str | None = None) -> tuple[str, ZaberReply] | None:
        """``raw`` as (text, reply); None for an info or alert message or a blank line. A line that is not a
        Zaber ASCII reply clears the input and raises (naming the command ``to``, when it answers one)."""
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            text = None
        if text is not None and text[:1] in ("#", "!"):  # info and alert messages: valid, not replies
            log.info("%s: %s", self.name, text)
            return None
        if text is not None and not text.strip():
            return None
        try:
            if text is None:
                raise ValueError("not ASCII")
            return text, parse_reply(text)
        except ValueError:
            self._buf.clear()
            what = f"garbled reply to {to!r}: {raw[:80]!r}" if to is not None else f"garbled reply {raw[:80]!r}"
            after = "; the next command starts afresh" if to is not None else ""
            raise self._fail(f"{what} is not a Zaber ASCII reply. Check the baud rate and the cable{after}") from None

    def _match_request(self, raw: bytes) -> ZaberReply | None:
        """The reply to a request in flight in ``raw``; None for any other line; raises on a garbled line."""
        parsed = self._parse(raw)
        if parsed is None:
            return None
        text, reply = parsed
        if (reply.device, reply.axis) != (self.device, self.axis) or reply.message_id not in self._requests:
            log.info("%s: reply not waited for (late, or another device's): %s", self.name, text)
            return None
        return reply

    def send(self, command: str) -> ZaberReply:
        """Send one raw ASCII command to this axis (diagnostics, tests); raises LickportError if refused."""
        return self._command(command)

    def close(self) -> None:
        """Stop the stage (best effort), then close the port. Safe to call twice."""
        self._close_safely(self._do_stop, "stop the stage")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------- private I/O
    def _ensure_limits(self) -> None:
        if not self._limits_applied:
            self.apply_limits()

    def _do_set(self, setting: Setting, value: int) -> None:
        self._command(f"{ZaberCommand.SET} {setting} {value}")

    def _do_home(self) -> None:
        self._command(ZaberCommand.HOME)

    def _do_stop(self) -> None:
        self._command(ZaberCommand.STOP)

    def _do_move_abs(self, microsteps: int) -> None:
        self._command(f"{ZaberCommand.MOVE_ABS} {microsteps}")

    def _do_move_vel(self, data: int) -> None:
        self._command(f"{ZaberCommand.MOVE_VEL} {data}")

    def _do_get_pos(self) -> tuple[int, ZaberReply, int]:
        reply = self._command(f"{ZaberCommand.GET} {Setting.POS}")
        try:
            return int(reply.data), reply, time.monotonic_ns()
        except ValueError:
            raise LickportError(f"{self.name}: reply to get pos carries no whole number of microsteps: "
                                f"{reply.line!r}") from None

    def _command(self, command: str) -> ZaberReply:
        """One command that must be accepted; an RJ reply raises naming the command and the reply."""
        sent, reply = self._exchange(command)
        self._note_warning(reply)
        if not reply.ok:
            raise self._refused(sent, reply)
        return reply

    def _note_warning(self, reply: ZaberReply) -> None:
        if reply.warning != self._warning:
            log.log(logging.INFO if reply.warning == "--" else logging.WARNING,
                    "%s: warning flag %s -> %s", self.name, self._warning, reply.warning)
            self._warning = reply.warning

    def _refused(self, sent: str, reply: ZaberReply) -> LickportError:
        why = _REJECTIONS.get(reply.data.split()[0], "see the Zaber ASCII protocol manual")
        return LickportError(f"{self.name}: the stage refused {sent!r}: {reply.line!r} ({reply.data}: {why})")

    def _drain(self) -> None:
        """Drop what arrived unasked (late replies, noise): a command's reply is the next line after it."""
        self._read(block=False)
        if self._buf:
            log.info("%s: dropping %d unread byte(s) before the next command: %r", self.name, len(self._buf),
                     bytes(self._buf[:80]))
            self._buf.clear()

    def _take_line(self) -> bytes | None:
        if b"\n" not in self._buf:
            return None
        raw, _, rest = self._buf.partition(b"\n")
        self._buf = bytearray(rest)
        return bytes(raw.rstrip(b"\r"))

    def _exchange(self, command: str) -> tuple[str, ZaberReply]:
        """Send ``command`` with a fresh message id; return (the line sent, its reply)."""
        if self._closed:
            raise self._fail("used after close()")
        self._message_id = self._message_id % MESSAGE_ID_MAX + 1
        message_id = self._message_id
        line = format_command(self.device, self.axis, message_id, command)
        sent = line.decode("ascii").strip()
        others: list[str] = []
        if self._requests:  # a blocking command takes the line: replies to requests in flight are dropped
            log.debug("%s: %d request(s) in flight abandoned for %r", self.name, len(self._requests), sent)
            self._requests.clear()
        self._drain()
        for attempt in range(1, self.retries + 2):
            self._write(line)
            deadline = time.monotonic() + self.timeout_s
            while True:
                raw = self._take_line()
                if raw is not None:
                    reply = self._match(raw, message_id, sent, others)
                    if reply is not None:
                        return sent, reply
                    continue
                if time.monotonic() >= deadline:
                    break
                self._read(block=True)
            log.warning("%s: no reply to %r within %.0f ms (attempt %d of %d)", self.name, sent,
                        self.timeout_s * 1e3, attempt, self.retries + 1)
        seen = f"; it sent {len(others)} other line(s), e.g. {others[0]!r}" if others else "; it sent nothing"
        raise self._fail(
            f"no reply to {sent!r} after {self.retries + 1} attempt(s), timeout {self.timeout_s * 1e3:.0f} ms "
            f"each{seen}. Check the cable and power, lickport.port, lickport.device ({self.device}) and "
            f"lickport.axis ({self.axis}), and that the stage speaks ASCII at the port's baud rate"
        )

    def _match(self, raw: bytes, message_id: int, sent: str, others: list[str]) -> ZaberReply | None:
        """The reply to ``message_id`` in ``raw``, None for a line that is not it; raises on a garbled line."""
        parsed = self._parse(raw, sent)
        if parsed is None:
            return None
        text, reply = parsed
        if (reply.device, reply.axis, reply.message_id) != (self.device, self.axis, message_id):
            log.info("%s: reply not waited for (late, or another device's): %s", self.name, text)
            others.append(text)
            return None
        return reply
