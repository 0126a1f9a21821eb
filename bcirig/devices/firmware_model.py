"""A line-level model of the valve controller firmware (hardware/valve-controller/firmware/valve.c).

It is the simulated twin's "device": the same grammar, replies, error codes, max-open clamp, minimum
reward interval, host watchdog, replay cache and lick debounce, driven by an injectable millisecond
clock instead of a crystal. The contract tests run the same assertions against this model and against
the real firmware in simavr, which is what keeps the two in step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from bcirig.devices.wire import LINE_MAX

OPTO_MAX_MS = 10000
PARTIAL_TIMEOUT_MS = 500
LICK_DEBOUNCE_MS = 3
CACHE_SIZE = 4
LIMIT_RANGES = {"max_open": (1, 10000), "min_interval": (0, 60000), "watchdog": (100, 60000)}
DEFAULT_LIMITS = {"max_open": 500, "min_interval": 200, "watchdog": 2000}


@dataclass
class Pulse:
    """One output pulse in device milliseconds; ``end_ms`` moves earlier if the watchdog cuts it."""

    start_ms: int
    end_ms: int

    @property
    def duration_ms(self) -> int:
        """How long the output was high."""
        return self.end_ms - self.start_ms


class FirmwareModel:
    """The firmware's behaviour on a millisecond clock (``clock_ms`` returns device time)."""

    def __init__(self, clock_ms: Callable[[], float]) -> None:
        self._clock_ms = clock_ms
        self.limits = dict(DEFAULT_LIMITS)
        self.pulses: dict[str, list[Pulse]] = {"valve": [], "opto": []}
        self.rewards = 0
        self.licks = 0
        self.errors = 0
        self.watchdog_trips = 0
        self._last_host_ms = self.now()
        self._tripped = False
        self._last_reward_ms: int | None = None
        self._cache: deque[tuple[int, str, str]] = deque(maxlen=CACHE_SIZE)
        self._partial = bytearray()
        self._partial_since = 0
        self._out: list[str] = []

    def now(self) -> int:
        """Device milliseconds."""
        return int(self._clock_ms())

    # ------------------------------------------------------------------------------------------ time
    def _active(self, name: str, t: int) -> bool:
        return any(p.start_ms <= t < p.end_ms for p in self.pulses[name])

    def advance(self) -> None:
        """Apply everything that happened on the device up to now (watchdog, partial-line timeout)."""
        t = self.now()
        deadline = self._last_host_ms + self.limits["watchdog"]
        if not self._tripped and t >= deadline:
            for pulses in self.pulses.values():
                for p in pulses:
                    if p.start_ms <= deadline < p.end_ms:
                        p.end_ms = deadline
            self._tripped = True
            self.watchdog_trips += 1
            self._out.append(f"! WDOG t={deadline}")
        if self._partial and t - self._partial_since >= PARTIAL_TIMEOUT_MS:
            self._out.append(self._error(_leading_seq(self._partial), "PARTIAL"))
            self._partial.clear()

    def inject_lick(self, duration_ms: float) -> None:
        """A lick-sensor contact starting now; reported if it lasts the debounce time."""
        self.advance()
        if duration_ms >= LICK_DEBOUNCE_MS:
            self.licks += 1
            self._out.append(f"! LICK t={self.now()}")

    def take_output(self) -> list[str]:
        """Lines the device has sent since the last call (replies and unsolicited events)."""
        self.advance()
        out, self._out = self._out, []
        return out

    # ----------------------------------------------------------------------------------------- input
    def feed(self, data: bytes) -> None:
        """Bytes arriving on the device's UART."""
        self.advance()
        for byte in data:
            if byte == 0x0A:
                if self._partial:
                    self._finish(bytes(self._partial))
                self._partial.clear()
            elif byte != 0x0D:
                if not self._partial:
                    self._partial_since = self.now()
                self._partial.append(byte)

    def _error(self, seq: int, code: str, extra: str = "") -> str:
        self.errors += 1
        return f"{seq if seq >= 0 else '-'} ERR {code}{extra}"

    def _finish(self, raw: bytes) -> None:
        seq = _leading_seq(raw)
        if any(b < 0x20 or b > 0x7E for b in raw):
            self._out.append(self._error(seq, "NOISE"))
            return
        line = raw.decode("ascii")
        if len(line) > LINE_MAX:
            self._out.append(self._error(seq, "LONG"))
            return
        if seq < 0:
            self._out.append(self._error(-1, "SYNTAX"))
            return
        self._last_host_ms = self.now()
        self._tripped = False
        for cached_seq, cached_line, cached_reply in self._cache:
            if cached_seq == seq and cached_line == line:
                self._out.append(cached_reply)  # a retransmission: answer again, never act again
                return
        reply = self._execute(seq, line.split(" ", 1)[1])
        self._cache.append((seq, line, reply))
        self._out.append(reply)

    # -------------------------------------------------------------------------------------- commands
    def _execute(self, seq: int, rest: str) -> str:
        words = rest.split()
        if not words:
            return self._error(seq, "SYNTAX")
        verb, arg_words = words[0], words[1:]
        if not verb.isalpha() or not verb.isupper():
            return self._error(seq, "SYNTAX")
        if len(verb) > 2:
            return self._error(seq, "UNKNOWN")
        if len(arg_words) > 3 or not all(w.isdigit() and len(w) <= 5 and int(w) <= 65535 for w in arg_words):
            return self._error(seq, "SYNTAX")
        args = [int(w) for w in arg_words]
        n = len(args)
        t = self.now()
        if verb == "R" and n == 1:
            return self._reward(seq, "R", args[0], None)
        if verb == "RO" and n == 2:
            return self._reward(seq, "RO", args[0], args[1])
        if verb == "O" and n == 1:
            if not 1 <= args[0] <= OPTO_MAX_MS:
                return self._error(seq, "RANGE")
            if self._active("opto", t):
                return self._error(seq, "BUSY")
            self.pulses["opto"].append(Pulse(t, t + args[0]))
            return f"{seq} OK O opto={args[0]} t={t}"
        if verb == "L" and n in (0, 3):
            if n == 3:
                new = dict(zip(("max_open", "min_interval", "watchdog"), args, strict=True))
                if any(not lo <= new[k] <= hi for k, (lo, hi) in LIMIT_RANGES.items()):
                    return self._error(seq, "RANGE")
                self.limits = new
            lim = self.limits
            return (
                f"{seq} OK L max_open={lim['max_open']} min_interval={lim['min_interval']} "
                f"watchdog={lim['watchdog']}"
            )
        if verb == "S" and n == 0:
            return (
                f"{seq} OK S valve={int(self._active('valve', t))} opto={int(self._active('opto', t))} t={t} "
                f"rewards={self.rewards} licks={self.licks} errors={self.errors} wdog={self.watchdog_trips}"
            )
        if verb == "V" and n == 0:
            return f"{seq} OK V bcirig-valve-twin 1.0.0 proto=1"
        if verb == "P" and n == 0:
            return f"{seq} OK P t={t}"
        if verb == "C" and n == 0:
            for pulses in self.pulses.values():
                for p in pulses:
                    if p.start_ms <= t < p.end_ms:
                        p.end_ms = t
            return f"{seq} OK C t={t}"
        if verb in ("R", "RO", "O", "S", "V", "P", "C", "L"):
            return self._error(seq, "SYNTAX")
        return self._error(seq, "UNKNOWN")

    def _reward(self, seq: int, verb: str, req_ms: int, opto_ms: int | None) -> str:
        t = self.now()
        if req_ms < 1 or (opto_ms is not None and not 1 <= opto_ms <= OPTO_MAX_MS):
            return self._error(seq, "RANGE")
        gap = self.limits["min_interval"]
        if self._last_reward_ms is not None and t - self._last_reward_ms < gap:
            return self._error(seq, "INTERVAL", f" wait={gap - (t - self._last_reward_ms)}")
        if self._active("valve", t) or (opto_ms is not None and self._active("opto", t)):
            return self._error(seq, "BUSY")
        open_ms = min(req_ms, self.limits["max_open"])
        self.pulses["valve"].append(Pulse(t, t + open_ms))
        if opto_ms is not None:
            self.pulses["opto"].append(Pulse(t, t + opto_ms))
        self._last_reward_ms = t
        self.rewards += 1
        opto = f" opto={opto_ms}" if opto_ms is not None else ""
        return f"{seq} OK {verb} open={open_ms} req={req_ms}{opto} t={t}"


def _leading_seq(raw: bytes | bytearray) -> int:
    head, sep, _ = bytes(raw).partition(b" ")
    if sep and head.isdigit() and len(head) <= 5 and int(head) <= 65535:
        return int(head)
    return -1
