"""Fixtures for the valve controller tests (rigs are defined in valve_rigs.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from valve_rigs import FirmwareRig, TwinRig, firmware_skip_reason

from bcirig.devices import ValveEmulator


def _firmware_rig() -> Iterator[FirmwareRig]:
    reason = firmware_skip_reason()
    if reason:
        pytest.skip(reason)
    with ValveEmulator() as emu:
        rig = FirmwareRig(emu)
        try:
            yield rig
        finally:
            rig.close()


@pytest.fixture(params=["twin", pytest.param("firmware", marks=pytest.mark.firmware)])
def rig(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The twin and the emulated firmware, each fresh per test."""
    if request.param == "twin":
        twin = TwinRig()
        yield twin
        twin.close()
    else:
        yield from _firmware_rig()


@pytest.fixture
def firmware_rig() -> Iterator[FirmwareRig]:
    """The emulated firmware only."""
    yield from _firmware_rig()
