"""Choose the valve controller and the lickport the rig file names and apply their safety limits."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

from bcirig.config import LickportConfig, LickportKind, ValveConfig, ValveKind
from bcirig.devices.emulator import ValveEmulator
from bcirig.devices.lickport import LickportError, ZaberLickport
from bcirig.devices.lickport_twin import LoopbackPort, ZaberStageModel
from bcirig.devices.valve import SimulatedValveController, ValveController, ValveError


def _serial_port(path: str, baud: int) -> object:
    import serial

    try:
        return serial.Serial(path, baud, timeout=0.02)
    except (OSError, ValueError) as exc:
        raise ValveError(f"cannot open valve controller port {path!r} at {baud} baud: {exc}. "
                         "Check valve.port in the rig file and that no other program holds the port") from exc


@contextlib.contextmanager
def open_valve(
    cfg: ValveConfig, *, timeout_s: float = 0.25, retries: int = 2
) -> Iterator[ValveController | SimulatedValveController]:
    """A valve controller for ``cfg.kind`` ('simulated', 'serial', 'emulated') with cfg's limits applied.

    Closing the context closes the valve, then the port (and stops the emulator).
    """
    with contextlib.ExitStack() as stack:
        valve: ValveController | SimulatedValveController
        emulator: ValveEmulator | None = None
        if cfg.kind == ValveKind.SIMULATED:
            valve = SimulatedValveController(ms_per_ul=cfg.ms_per_ul)
        else:
            if cfg.kind == ValveKind.EMULATED:
                emulator = stack.enter_context(ValveEmulator(cfg.emulator_dir or None))
                path = emulator.pty_path
            elif cfg.kind == ValveKind.SERIAL:
                path = cfg.port
            else:
                raise ValueError(f"valve.kind '{cfg.kind}' is not one of {', '.join(repr(k.value) for k in ValveKind)}")
            valve = ValveController(_serial_port(path, cfg.baud), ms_per_ul=cfg.ms_per_ul,
                                    timeout_s=timeout_s, retries=retries)
            if emulator is not None:  # a simulated mouse can lick the emulated firmware's sensor pin
                valve.lick_input = emulator.inject_lick
        stack.callback(valve.close)
        if isinstance(valve, ValveController):
            valve.wait_ready()
        valve.set_limits(cfg.max_open_ms, cfg.min_interval_ms, cfg.watchdog_ms)
        yield valve


@contextlib.contextmanager
def open_lickport(cfg: LickportConfig, *, timeout_s: float = 0.25, retries: int = 2) -> Iterator[ZaberLickport]:
    """The lickport for ``cfg.kind`` ('serial': a Zaber stage on cfg.port; 'simulated': its in-process twin),
    with cfg's limits and top speed written into the stage. Not homed: call ``home()`` before moving.

    Closing the context stops the stage, then closes the port.
    """
    if cfg.kind == LickportKind.SERIAL:
        if not cfg.port:
            raise LickportError("lickport.port is empty: name the Zaber stage's serial device in the rig file "
                                "(e.g. /dev/ttyUSB0) when lickport.kind = 'serial'")
        import serial

        try:
            port: Any = serial.Serial(cfg.port, cfg.baud, timeout=0.02)
        except (OSError, ValueError) as exc:
            raise LickportError(f"cannot open lickport port {cfg.port!r} at {cfg.baud} baud: {exc}. Check "
                                "lickport.port in the rig file and that no other program holds the port") from exc
    elif cfg.kind == LickportKind.SIMULATED:
        travel = max(525_000, math.ceil(cfg.max_mm * 1000 / cfg.um_per_microstep) + 1)
        port = LoopbackPort(ZaberStageModel(device=cfg.device, travel_microsteps=travel, start_microsteps=0))
    else:
        raise ValueError(f"lickport.kind '{cfg.kind}': the rig has no lickport to open (kinds: 'serial', "
                         "'simulated')")
    try:
        lickport = ZaberLickport(port, um_per_microstep=cfg.um_per_microstep, min_mm=cfg.min_mm, max_mm=cfg.max_mm,
                                 max_speed_mm_s=cfg.max_speed_mm_s, device=cfg.device, axis=cfg.axis,
                                 timeout_s=timeout_s, retries=retries)
    except ValueError as exc:
        port.close()
        raise ValueError(f"lickport in the rig file: {exc}") from exc
    with lickport:
        lickport.apply_limits()
        yield lickport
