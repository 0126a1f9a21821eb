"""Choose the valve controller the rig file names and apply its safety limits."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from bcirig.config import ValveConfig
from bcirig.devices.emulator import ValveEmulator
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
        if cfg.kind == "simulated":
            valve = SimulatedValveController(ms_per_ul=cfg.ms_per_ul)
        else:
            if cfg.kind == "emulated":
                emulator = stack.enter_context(ValveEmulator(cfg.emulator_dir or None))
                path = emulator.pty_path
            elif cfg.kind == "serial":
                path = cfg.port
            else:
                raise ValueError(f"valve.kind {cfg.kind!r} is not one of 'simulated', 'serial', 'emulated'")
            valve = ValveController(_serial_port(path, cfg.baud), ms_per_ul=cfg.ms_per_ul,
                                    timeout_s=timeout_s, retries=retries)
            if emulator is not None:  # a simulated mouse can lick the emulated firmware's sensor pin
                valve.lick_input = emulator.inject_lick
        stack.callback(valve.close)
        if isinstance(valve, ValveController):
            valve.wait_ready()
        valve.set_limits(cfg.max_open_ms, cfg.min_interval_ms, cfg.watchdog_ms)
        yield valve
