"""bcirig.devices: device drivers (valve controller, lickport), their simulated twins, and the valve
firmware emulator."""

from bcirig.devices.commands import execute_command
from bcirig.devices.emulator import EmulatorError, PinEvent, ValveEmulator
from bcirig.devices.factory import open_lickport, open_valve
from bcirig.devices.lickport import LickportError, LickportStatus, ZaberLickport
from bcirig.devices.lickport_twin import LoopbackPort, ZaberStageModel, ZaberTwin
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
    "LickportError",
    "LickportStatus",
    "LoopbackPort",
    "PinEvent",
    "SimulatedValveController",
    "ValveAck",
    "ValveController",
    "ValveEmulator",
    "ValveError",
    "ValveLimits",
    "ValveStatus",
    "ZaberLickport",
    "ZaberStageModel",
    "ZaberTwin",
    "execute_command",
    "open_lickport",
    "open_valve",
]
