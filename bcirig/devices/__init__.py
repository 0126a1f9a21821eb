"""bcirig.devices: device drivers, their simulated twins, and the valve firmware emulator."""

from bcirig.devices.commands import execute_command
from bcirig.devices.emulator import EmulatorError, PinEvent, ValveEmulator
from bcirig.devices.factory import open_valve
from bcirig.devices.valve import (
    Lick,
    SimulatedValveController,
    ValveAck,
    ValveController,
    ValveError,
    ValveLimits,
    ValveStatus,
)

__all__ = [
    "EmulatorError",
    "Lick",
    "PinEvent",
    "SimulatedValveController",
    "ValveAck",
    "ValveController",
    "ValveEmulator",
    "ValveError",
    "ValveLimits",
    "ValveStatus",
    "execute_command",
    "open_valve",
]
