"""What a replay hands the task as yesterday's state, for files with and without a ``carried`` attribute."""

import json
import math
from typing import Any

from bcirig.replay import carried_state


def _calibration(**data: Any) -> list[dict[str, Any]]:
    return [{"frame": 99, "name": "calibration", "trial": 0, "data": data}]


def test_the_files_carried_attribute_is_used_as_recorded() -> None:
    carried = {"threshold_z": 1.25, "day": 3, "daily_z": [1.0, 1.5]}
    events = _calibration(carried_z=9.0)  # the attribute wins over what the event says
    assert carried_state({"carried": json.dumps(carried)}, events) == carried
    assert carried_state({"carried": "{}"}, events) == {}


def test_without_the_attribute_the_calibration_event_says_what_the_task_was_given() -> None:
    assert carried_state({}, _calibration(carried_z=1.364, previous_z=[1.1, 1.2])) == {
        "threshold_z": 1.364, "daily_z": [1.1, 1.2]}
    assert carried_state({}, _calibration(carried_z=math.nan, previous_z=[])) == {}  # day 1
    assert carried_state({}, []) == {}  # never calibrated
