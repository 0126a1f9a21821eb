"""The reward valve controller: serial driver for the AVR firmware and its simulated twin.

Both classes share one public surface (:class:`_ValveBase`): the public methods validate, convert
(µL -> ms with the rig's calibration), clamp and log; the private ``_do_*`` methods talk to the device
through ``_exchange``. :class:`ValveController` *has* a serial port (passed in); the twin has a
:class:`~bcirig.devices.firmware_model.FirmwareModel` on its own clock. Safety itself (max open time,
minimum interval, host watchdog) lives in the device, so it holds whatever the host does.

Single-threaded use from a node loop::

    with open_valve(rig.valve) as valve:          # bcirig.devices.open_valve
        ack = valve.reward(cmd.reward_ul)          # blocks for one round trip (a few ms)
        ...
        valve.ping(); licks = valve.poll_licks()   # periodically; poll_licks never blocks
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

from bcirig.devices.firmware_model import LIMIT_RANGES, FirmwareModel
from bcirig.devices.lineio import SerialLineIO
from bcirig.devices.wire import ARG_MAX, SEQ_MAX, DeviceEvent, Reply, Verb, format_command, parse_line

log = logging.getLogger(__name__)

__all__ = ["Lick", "SimulatedValveController", "ValveAck", "ValveController", "ValveError", "ValveLimits",
           "ValveStatus"]


class ValveError(RuntimeError):
    """The valve controller cannot be reached or answers nonsense (dead, unplugged or garbled port)."""


@dataclass(frozen=True)
class ValveAck:
    """The device's answer to one command. A refused command has ``ok`` False and ``error`` set."""

    seq: int
    ok: bool
    error: str = ""  # device error code and detail, e.g. "INTERVAL wait=120"
    open_ms: float = 0.0  # valve open time the device actually used (after its max-open clamp)
    device_ms: int = -1  # firmware clock when the pulse started (or the command ran)
    t_sent_ns: int = 0  # time.monotonic_ns() when the command was first written
    t_ack_ns: int = 0  # time.monotonic_ns() when the reply was read
    requested_ms: float = 0.0  # what the caller asked for, before any clamp
    opto_ms: float = 0.0
    attempts: int = 1  # 1 + retransmissions (each with the same seq, so never acted on twice)

    @property
    def round_trip_ms(self) -> float:
        """Host-side command-to-acknowledgement time."""
        return (self.t_ack_ns - self.t_sent_ns) / 1e6


@dataclass(frozen=True)
class Lick:
    """One lick onset: the firmware's millisecond clock and the host's monotonic time when read."""

    device_ms: int
    t_ns: int


@dataclass(frozen=True)
class ValveLimits:
    """The safety limits the firmware enforces."""

    max_open_ms: int
    min_interval_ms: int
    watchdog_ms: int


@dataclass(frozen=True)
class ValveStatus:
    """The device's counters and output state."""

    valve_open: bool
    opto_on: bool
    device_ms: int
    rewards: int
    licks: int
    errors: int
    watchdog_trips: int


def _check_finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def _wire_ms(ms: float) -> int:
    """Milliseconds as the wire carries them (whole, 0..65535); the device rejects 0 with RANGE."""
    return min(ARG_MAX, round(ms))


class _ValveBase:
    """Public methods shared by the driver and the twin; subclasses implement ``_exchange``."""

    name = "valve"

    def __init__(self, *, ms_per_ul: float) -> None:
        if not (math.isfinite(ms_per_ul) and ms_per_ul > 0):
            raise ValueError(f"ms_per_ul (valve calibration) must be > 0, got {ms_per_ul!r}")
        self.ms_per_ul = float(ms_per_ul)
        self._licks: list[Lick] = []
        self._limits: ValveLimits | None = None
        self._seq = random.SystemRandom().randint(1, SEQ_MAX)  # a restarted host never repeats a seq
        self._closed = False
        # Where a simulated tongue touches the lick sensor (emulator pin, twin); None on a real rig.
        self.lick_input: Callable[[float], object] | None = None

    # ------------------------------------------------------------------------------ for subclasses
    def _exchange(self, verb: Verb, *args: int) -> tuple[Reply, int, int, int]:
        """Send one command; return (reply, t_sent_ns, t_ack_ns, attempts)."""
        raise NotImplementedError

    def _next_seq(self) -> int:
        self._seq = self._seq % SEQ_MAX + 1
        return self._seq

    def _on_event(self, event: DeviceEvent, t_ns: int) -> None:
        if event.name == "LICK" and "t" in event.fields:
            self._licks.append(Lick(event.fields["t"], t_ns))
        elif event.name == "WDOG":
            log.warning("%s: device watchdog closed the valve (host silent), device t=%s ms",
                        self.name, event.fields.get("t"))
        elif event.name == "LICKDROP":
            log.warning("%s: device dropped %s lick(s) (host not reading)", self.name, event.fields.get("n"))
        else:
            log.info("%s: %s", self.name, event.line)

    def _ack(self, reply: Reply, t_sent: int, t_ack: int, attempts: int, requested_ms: float) -> ValveAck:
        error = "" if reply.ok else " ".join([reply.word, *(f"{k}={v}" for k, v in reply.fields.items())])
        return ValveAck(
            seq=reply.seq, ok=reply.ok, error=error, open_ms=float(reply.fields.get("open", 0)),
            device_ms=reply.fields.get("t", -1), t_sent_ns=t_sent, t_ack_ns=t_ack,
            requested_ms=requested_ms, opto_ms=float(reply.fields.get("opto", 0)), attempts=attempts,
        )

    def _query(self, verb: Verb, *keys: str) -> Reply:
        """A command that must succeed and carry ``keys``; anything else means a broken link or firmware."""
        reply, *_ = self._exchange(verb)
        missing = [k for k in keys if k not in reply.fields]
        if not reply.ok or missing:
            raise ValveError(f"{self.name}: unexpected reply to {verb.name.lower()}: {reply.line!r}"
                             + (f" (missing {', '.join(missing)})" if missing else ""))
        return reply

    def _clamp_open(self, ms: float) -> float:
        """Clamp to the max-open limit we know of (the device clamps again, authoritatively)."""
        if self._limits is not None and ms > self._limits.max_open_ms:
            log.warning("%s: valve open %.1f ms clamped to max_open_ms=%d", self.name, ms,
                        self._limits.max_open_ms)
            return float(self._limits.max_open_ms)
        return ms

    # --------------------------------------------------------------------------------- private I/O
    def _do_reward(self, open_ms: int, opto_ms: int | None, requested_ms: float) -> ValveAck:
        if opto_ms is None:
            reply, t0, t1, n = self._exchange(Verb.REWARD, open_ms)
        else:
            reply, t0, t1, n = self._exchange(Verb.REWARD_OPTO, open_ms, opto_ms)
        return self._ack(reply, t0, t1, n, requested_ms)

    def _do_opto(self, ms: int) -> ValveAck:
        reply, t0, t1, n = self._exchange(Verb.OPTO, ms)
        return self._ack(reply, t0, t1, n, 0.0)

    def _do_limits(self, *args: int) -> ValveLimits:
        reply, *_ = self._exchange(Verb.LIMITS, *args)
        if not reply.ok:
            raise ValueError(f"{self.name}: device refused limits {args}: {reply.word}")
        if not {"max_open", "min_interval", "watchdog"} <= reply.fields.keys():
            raise ValveError(f"{self.name}: unexpected reply to limits: {reply.line!r}")
        f = reply.fields
        self._limits = ValveLimits(f["max_open"], f["min_interval"], f["watchdog"])
        return self._limits

    # ---------------------------------------------------------------------------------- public API
    def reward(self, ul: float) -> ValveAck:
        """Deliver ``ul`` microlitres (opens the valve ul x ms_per_ul ms, clamped to max_open_ms)."""
        ms = _check_finite("reward volume (µL)", ul) * self.ms_per_ul
        return self.open_valve(ms)

    def open_valve(self, ms: float) -> ValveAck:
        """Open the valve for ``ms`` milliseconds (clamped to max_open_ms; refused if too soon)."""
        requested = _check_finite("valve open time (ms)", ms)
        ack = self._do_reward(_wire_ms(self._clamp_open(requested)), None, requested)
        self._log_ack("valve open", ack)
        return ack

    def opto(self, ms: float) -> ValveAck:
        """Pulse the optogenetics TTL for ``ms`` milliseconds."""
        ack = self._do_opto(_wire_ms(_check_finite("opto pulse (ms)", ms)))
        self._log_ack("opto", ack)
        return ack

    def reward_opto(self, ul: float, opto_ms: float) -> ValveAck:
        """Reward and opto pulse starting on the same device tick (both refused together)."""
        requested = _check_finite("reward volume (µL)", ul) * self.ms_per_ul
        opto = _wire_ms(_check_finite("opto pulse (ms)", opto_ms))
        ack = self._do_reward(_wire_ms(self._clamp_open(requested)), opto, requested)
        self._log_ack("reward+opto", ack)
        return ack

    def set_limits(self, max_open_ms: int, min_interval_ms: int, watchdog_ms: int) -> ValveLimits:
        """Set the firmware's safety limits; raises ValueError outside the firmware's ranges."""
        values = {"max_open": max_open_ms, "min_interval": min_interval_ms, "watchdog": watchdog_ms}
        for key, value in values.items():
            lo, hi = LIMIT_RANGES[key]
            if isinstance(value, bool) or int(value) != value or not lo <= value <= hi:
                raise ValueError(f"{key}_ms must be a whole number in [{lo}, {hi}], got {value!r}")
        limits = self._do_limits(int(max_open_ms), int(min_interval_ms), int(watchdog_ms))
        log.info("%s: limits %s", self.name, limits)
        return limits

    def limits(self) -> ValveLimits:
        """The limits the firmware is enforcing now."""
        return self._do_limits()

    def status(self) -> ValveStatus:
        """Output state and counters."""
        f = self._query(Verb.STATUS, "valve", "opto", "t", "rewards", "licks", "errors", "wdog").fields
        return ValveStatus(bool(f["valve"]), bool(f["opto"]), f["t"], f["rewards"], f["licks"], f["errors"],
                           f["wdog"])

    def version(self) -> str:
        """Firmware name, version and protocol version, e.g. 'bcirig-valve 1.0.0 proto=1'."""
        reply = self._query(Verb.VERSION)
        return " ".join([reply.text, *(f"{k}={v}" for k, v in reply.fields.items())])

    def ping(self) -> int:
        """Keep the device watchdog fed; returns the device clock in ms."""
        return self._query(Verb.PING, "t").fields["t"]

    def close_valve(self) -> ValveAck:
        """Close the valve and stop the opto pulse now."""
        reply, t0, t1, n = self._exchange(Verb.CLOSE)
        return self._ack(reply, t0, t1, n, 0.0)

    def calibrate(self, n: int, ms: float) -> list[ValveAck]:
        """Open the valve ``n`` times for ``ms`` each (weigh the water to get ms_per_ul)."""
        if n < 1:
            raise ValueError(f"calibration needs n >= 1 openings, got {n}")
        acks: list[ValveAck] = []
        while len(acks) < n:
            ack = self.open_valve(ms)
            if ack.ok:
                acks.append(ack)
                continue
            code, _, detail = ack.error.partition(" ")
            if code not in ("INTERVAL", "BUSY"):
                raise ValveError(f"{self.name}: calibration opening {len(acks) + 1} refused: {ack.error}")
            wait_ms = int(detail.partition("=")[2] or 0) if code == "INTERVAL" else ms
            self._wait_ms(max(1.0, float(wait_ms)))
        log.info("%s: calibration done, %d x %.1f ms", self.name, n, ms)
        return acks

    def _wait_ms(self, ms: float) -> None:
        """Let ``ms`` of device time pass (the twin advances its clock only if it owns it)."""
        time.sleep(ms / 1000)

    def poll_licks(self) -> list[Lick]:
        """Licks read so far (never blocks)."""
        self._poll()
        licks, self._licks = self._licks, []
        return licks

    def _poll(self) -> None:
        """Read whatever the device has sent, without waiting."""

    def touch_lick_sensor(self, duration_ms: float = 40.0) -> None:
        """A simulated tongue contact on the lick sensor; the device reports it as a lick if it debounces."""
        if self.lick_input is None:
            raise ValveError(f"{self.name}: no simulated lick input (a real sensor is wired to the device)")
        self.lick_input(duration_ms)

    def fileno(self) -> int | None:
        """A file descriptor that becomes readable when the device sends something (None: none)."""
        return None

    def close(self) -> None:
        """Close the valve (best effort), then release the port."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _log_ack(self, what: str, ack: ValveAck) -> None:
        if ack.ok:
            log.debug("%s: %s %.0f ms (asked %.1f) at device t=%d, %.2f ms round trip", self.name, what,
                      ack.open_ms or ack.opto_ms, ack.requested_ms, ack.device_ms, ack.round_trip_ms)
        else:
            log.warning("%s: %s refused: %s", self.name, what, ack.error)


class ValveController(SerialLineIO, _ValveBase):
    """Driver for the AVR valve controller on a pyserial-like port (``read``, ``write``, ``in_waiting``).

    Not thread-safe: one loop owns it (commands block for one round trip, ``poll_licks`` never blocks).

    Each command waits ``timeout_s`` for its reply and is re-sent up to ``retries`` times with the same
    sequence number; the firmware answers a repeated (seq, line) from its cache without acting again,
    so a lost reply never causes a second reward. The driver sets ``port.timeout`` to a short read
    timeout (a blocking read with a real timeout, never a spin).
    """

    error = ValveError

    def __init__(self, port: Any, *, ms_per_ul: float, timeout_s: float = 0.25, retries: int = 2) -> None:
        super().__init__(ms_per_ul=ms_per_ul)
        if timeout_s <= 0 or retries < 0:
            raise ValueError(f"timeout_s must be > 0 and retries >= 0, got {timeout_s}, {retries}")
        self._port = port
        self.name = f"valve controller on {getattr(port, 'port', None) or getattr(port, 'name', None) or port!r}"
        self.timeout_s = timeout_s
        self.retries = retries
        self._buf = bytearray()
        self._garbage: list[bytes] = []
        self._synced = False  # a reply has been matched since the port was opened
        with contextlib.suppress(AttributeError, ValueError):
            port.timeout = min(0.02, timeout_s)

    # ------------------------------------------------------------------------------------------ I/O
    def _lines(self) -> list[tuple[Reply | DeviceEvent | None, bytes, int]]:
        out = []
        while b"\n" in self._buf:
            raw, _, rest = self._buf.partition(b"\n")
            self._buf = bytearray(rest)
            t = time.monotonic_ns()
            try:
                parsed = parse_line(raw.decode("ascii"))
            except UnicodeDecodeError:
                parsed = None
            out.append((parsed, bytes(raw), t))
        return out

    def _dispatch(self, want_seq: int | None) -> tuple[Reply, int] | None:
        """Handle complete lines; return the reply to ``want_seq`` if it arrived."""
        found = None
        for parsed, raw, t in self._lines():
            if isinstance(parsed, DeviceEvent):
                self._on_event(parsed, t)
            elif isinstance(parsed, Reply) and parsed.seq == want_seq and found is None:
                found = (parsed, t)
                self._synced = True
            elif isinstance(parsed, Reply):
                log.info("%s: reply not waited for (late or to noise): %s", self.name, parsed.line)
            elif raw.strip():
                self._garbage.append(raw)
                # Opening a port can cut the start of the boot banner: only later garbage is news.
                log.log(logging.WARNING if self._synced else logging.INFO,
                        "%s: unparseable line from device: %r", self.name, raw[:80])
        return found

    def _exchange(self, verb: Verb, *args: int) -> tuple[Reply, int, int, int]:
        if self._closed:
            raise self._fail("used after close()")
        seq = self._next_seq()
        line = format_command(seq, verb, *args).encode("ascii")
        self._garbage.clear()
        t_sent = time.monotonic_ns()
        for attempt in range(1, self.retries + 2):
            self._write(line)
            deadline = time.monotonic() + self.timeout_s
            while True:
                found = self._dispatch(seq)
                if found is not None:
                    return found[0], t_sent, found[1], attempt
                if time.monotonic() >= deadline:
                    break
                self._read(block=True)
            log.warning("%s: no reply to %r within %.0f ms (attempt %d)", self.name, line.strip(),
                        self.timeout_s * 1e3, attempt)
        seen = f"; it sent {len(self._garbage)} unparseable line(s), e.g. {self._garbage[0][:60]!r}" \
            if self._garbage else "; it sent nothing"
        raise self._fail(
            f"no reply to {line.decode().strip()!r} after {self.retries + 1} attempt(s) of "
            f"{self.timeout_s * 1e3:.0f} ms{seen}. Check the cable, the port name and that the firmware "
            f"runs at the configured baud rate"
        )

    def raw(self, data: bytes, timeout_s: float | None = None) -> str:
        """Write raw bytes (diagnostics, tests) and return the next reply line, '' if none came."""
        self._write(data)
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while True:
            for parsed, raw, t in self._lines():
                if isinstance(parsed, DeviceEvent):
                    self._on_event(parsed, t)
                elif isinstance(parsed, Reply):
                    return parsed.line
                elif raw.strip():
                    log.warning("%s: unparseable line from device: %r", self.name, raw[:80])
            if time.monotonic() >= deadline:
                return ""
            self._read(block=True)

    def wait_ready(self, timeout_s: float = 3.0) -> str:
        """Wait for the firmware to answer (a real board resets when the port opens); returns version()."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.version()
            except ValveError:
                if time.monotonic() >= deadline:
                    raise

    def _poll(self) -> None:
        self._read(block=False)
        self._dispatch(None)

    def fileno(self) -> int | None:
        """The port's file descriptor (for zmq.Poller / select), None if it has none."""
        fileno = getattr(self._port, "fileno", None)
        return int(fileno()) if fileno is not None else None

    def close(self) -> None:
        """Close the valve (best effort), then the port. Safe to call twice."""
        self._close_safely(self.close_valve, "close the valve")


class SimulatedValveController(_ValveBase):
    """The valve controller's simulated twin: same interface and safety logic, no port.

    ``clock_ns`` (default ``time.monotonic_ns``) drives both the device clock and lick timestamps;
    tests pass a fake clock and advance it. The device side is a
    :class:`~bcirig.devices.firmware_model.FirmwareModel`, so replies, error codes, the max-open clamp,
    the minimum interval and the host watchdog follow the firmware's rules.
    """

    name = "simulated valve controller"

    def __init__(self, *, ms_per_ul: float, clock_ns: Callable[[], int] | None = None) -> None:
        super().__init__(ms_per_ul=ms_per_ul)
        self._clock_ns = clock_ns or time.monotonic_ns
        t0 = self._clock_ns()
        self.device = FirmwareModel(lambda: (self._clock_ns() - t0) / 1e6)
        self._owns_clock = clock_ns is None
        self.lick_input = self.device.inject_lick

    def _collect(self, want_seq: int | None) -> Reply | None:
        found = None
        t = self._clock_ns()
        for text in self.device.take_output():
            parsed = parse_line(text)
            if isinstance(parsed, DeviceEvent):
                self._on_event(parsed, t)
            elif isinstance(parsed, Reply) and parsed.seq == want_seq and found is None:
                found = parsed
        return found

    def _exchange(self, verb: Verb, *args: int) -> tuple[Reply, int, int, int]:
        if self._closed:
            raise ValveError(f"{self.name}: used after close()")
        seq = self._next_seq()
        t_sent = self._clock_ns()
        self.device.feed(format_command(seq, verb, *args).encode("ascii"))
        reply = self._collect(seq)
        assert reply is not None, "the firmware model answers every well-formed command"
        return reply, t_sent, self._clock_ns(), 1

    def raw(self, data: bytes, timeout_s: float | None = None) -> str:
        """Feed raw bytes to the model and return its first reply line ('' if none)."""
        self.device.feed(data)
        t = self._clock_ns()
        first = ""
        for text in self.device.take_output():
            parsed = parse_line(text)
            if isinstance(parsed, DeviceEvent):
                self._on_event(parsed, t)
            elif not first:
                first = text
        return first

    def inject_lick(self, duration_ms: float = 50.0) -> None:
        """A lick on the simulated sensor now."""
        self.device.inject_lick(duration_ms)

    def _wait_ms(self, ms: float) -> None:
        if self._owns_clock:
            time.sleep(ms / 1000)
        else:
            raise ValveError(f"{self.name}: calibrate() would wait {ms:.0f} ms on an injected clock; "
                             "advance the clock and call again")

    def _poll(self) -> None:
        self._collect(None)

    def close(self) -> None:
        """Close the valve; further commands raise ValveError."""
        if not self._closed:
            self.close_valve()
            self._closed = True
