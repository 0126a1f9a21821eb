"""Task control: the trial state machine, threshold calibration, readout-to-feedback mapping."""

from bcirig.control.calibration import (
    CalibrationError,
    CalibrationResult,
    calibrate,
    calibrate_day,
    carry_state,
    threshold_for_fraction,
)
from bcirig.control.mapping import activity_bin, grating_angle, tone_frequency
from bcirig.control.task import Task, TrialRecord

__all__ = [
    "CalibrationError",
    "CalibrationResult",
    "Task",
    "TrialRecord",
    "activity_bin",
    "calibrate",
    "calibrate_day",
    "carry_state",
    "grating_angle",
    "threshold_for_fraction",
    "tone_frequency",
]
