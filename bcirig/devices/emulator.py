"""Run the valve controller firmware in simavr (hardware/valve-controller) and watch its pins.

:class:`ValveEmulator` starts the ``valve-emu`` harness built by ``make firmware``: the firmware runs in
real time, its UART0 is a pseudo-terminal (``.pty_path``, open it with pyserial), and every change of the
valve and opto pins is reported with its *simulated* time, so tests measure pulse lengths as the
hardware would produce them, independent of host scheduling.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

FIRMWARE_DIR = Path(__file__).resolve().parents[2] / "hardware" / "valve-controller"
BUILD_DIR = FIRMWARE_DIR / "build"


class EmulatorError(RuntimeError):
    """The emulator is not built, did not start, or stopped."""


@dataclass(frozen=True)
class PinEvent:
    """A pin edge reported by the harness: pin name ('valve', 'opto', 'lick'), level, simulated µs."""

    name: str
    level: int
    t_us: float


def harness_paths(build_dir: Path | str | None = None) -> tuple[Path, Path]:
    """(harness binary, firmware ELF) under ``build_dir``; if empty, ``$BCIRIG_VALVE_BUILD``, else the source
    checkout's hardware/valve-controller/build."""
    build = Path(build_dir) if build_dir else Path(os.environ.get("BCIRIG_VALVE_BUILD") or BUILD_DIR)
    return build / "valve-emu", build / "valve.elf"


def harness_built(build_dir: Path | None = None) -> bool:
    """True when both the harness and the firmware are built."""
    return all(p.is_file() for p in harness_paths(build_dir))


class ValveEmulator:
    """The valve firmware running in simavr, as a context manager.

    >>> with ValveEmulator() as emu:
    ...     port = serial.Serial(emu.pty_path, 115200)
    """

    def __init__(self, build_dir: Path | str | None = None, *, start_timeout_s: float = 10.0) -> None:
        self.harness, self.firmware = harness_paths(build_dir)
        self.start_timeout_s = start_timeout_s
        self.pty_path = ""
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._cond = threading.Condition()
        self._events: list[PinEvent] = []
        self._other: list[str] = []
        self._ready = False
        self._ended = False

    # -------------------------------------------------------------------------------------- lifecycle
    def start(self) -> ValveEmulator:
        """Start the harness and wait until it reports its pty."""
        missing = [str(p) for p in (self.harness, self.firmware) if not p.is_file()]
        if missing:
            raise EmulatorError(
                f"valve emulator not found: missing {', '.join(missing)}. Build it with `make firmware` in a "
                "bcirig source checkout (needs gcc-avr, avr-libc, simavr, libsimavr-dev; `make sysdeps` installs "
                "them), then name its build folder in the rig file (valve.emulator_dir) or in $BCIRIG_VALVE_BUILD"
            )
        self._proc = subprocess.Popen(
            [str(self.harness), str(self.firmware)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1,
        )
        self._reader = threading.Thread(target=self._read_stdout, name="valve-emu-reader", daemon=True)
        self._reader.start()
        with self._cond:
            if not self._cond.wait_for(lambda: self._ready or self._ended, self.start_timeout_s) or not self._ready:
                output = "\n".join(self._other[-10:])
                self.close()
                raise EmulatorError(f"valve emulator did not start within {self.start_timeout_s} s:\n{output}")
        return self

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            words = line.split()
            with self._cond:
                if len(words) == 4 and words[0] in ("PIN", "INJ") and words[3].startswith("t_us="):
                    self._events.append(PinEvent(words[1], int(words[2]), float(words[3][5:])))
                elif len(words) == 2 and words[0] == "PTY":
                    self.pty_path = words[1]
                elif words and words[0] == "READY":
                    self._ready = True
                else:
                    self._other.append(line.rstrip())
                self._cond.notify_all()
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the harness (QUIT, then terminate/kill) and reap it; no zombies, safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.write("QUIT\n")
                proc.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass
        try:
            proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=2.0)
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> ValveEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------------------- events
    def pin_events(self, name: str | None = None) -> list[PinEvent]:
        """Pin edges reported so far (optionally only pin ``name``), in order."""
        with self._cond:
            return [e for e in self._events if name is None or e.name == name]

    def mark(self) -> int:
        """Index of the next pin event; pass as ``since`` to wait only for later events."""
        with self._cond:
            return len(self._events)

    def wait_for_pin(self, name: str, level: int, timeout_s: float = 5.0, since: int = 0) -> PinEvent:
        """The first edge of pin ``name`` to ``level`` at index >= ``since``; waits for it."""

        def find() -> PinEvent | None:
            return next((e for e in self._events[since:] if e.name == name and e.level == level), None)

        with self._cond:
            if not self._cond.wait_for(lambda: find() is not None or self._ended, timeout_s):
                raise TimeoutError(f"pin {name} did not go to {level} within {timeout_s} s "
                                   f"(events since #{since}: {self._events[since:]})")
            event = find()
            if event is None:
                raise EmulatorError(f"valve emulator exited; last output: {self._other[-5:]}")
            return event

    def wait_for_pulses(self, name: str, n: int, timeout_s: float = 5.0, since: int = 0) -> list[float]:
        """Durations (simulated ms) of the first ``n`` complete pulses of ``name`` after ``since``."""
        deadline = time.monotonic() + timeout_s
        while True:
            pulses = self.pulses(name, since)
            if len(pulses) >= n:
                return [d for _, d in pulses[:n]]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(pulses)} of {n} {name} pulse(s) within {timeout_s} s")
            with self._cond:
                self._cond.wait(min(remaining, 0.5))

    def pulses(self, name: str, since: int = 0) -> list[tuple[float, float]]:
        """Complete pulses of pin ``name`` after event ``since``: (start_ms, duration_ms) in simulated time."""
        with self._cond:
            events = [e for e in self._events[since:] if e.name == name]
        out, start = [], None
        for e in events:
            if e.level == 1:
                start = e.t_us
            elif start is not None:
                out.append((start / 1000, (e.t_us - start) / 1000))
                start = None
        return out

    def inject_lick(self, duration_ms: float = 50.0, timeout_s: float = 5.0) -> PinEvent:
        """Drive the lick sensor high for ``duration_ms`` (simulated); returns the rising edge as applied."""
        if self._proc is None or self._proc.stdin is None:
            raise EmulatorError("valve emulator is not running")
        since = self.mark()
        self._proc.stdin.write(f"LICK {round(duration_ms)}\n")
        self._proc.stdin.flush()
        return self.wait_for_pin("lick", 1, timeout_s, since)
