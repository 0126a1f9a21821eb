"""The session file's layout: every table, its columns, their dtypes. Versioned; readers check it.

Each table is an HDF5 group of equal-length, resizable 1-D or 2-D datasets (one per column), appended
together. Tables are created before SWMR writing starts (SWMR cannot create objects later); per-ROI
widths and the frame shape come from the session's set-up.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FORMAT = "bcirig-session"
VERSION = 3  # 2: the acquisition table (microscope index, time, drops per frame); 3: the presentation table
READABLE = (1, 2, 3)

# Stage stamps, in the order a frame's data passes them (time.monotonic_ns(), one clock for the machine).
READOUT_STAMPS = ("source", "arrive", "registered", "extracted", "decoded", "published")
FEEDBACK_STAMPS = ("source", "arrive", "published", "task_in", "task_out")
COMMAND_STAMPS = ("source", "arrive", "published", "task_in", "task_out")
ACK_STAMPS = ("task_out", "device_in", "valve_sent", "valve_ack", "device_ack")
OPERATOR_STAMPS = ("console", "request", "recorded")  # sent by the console, at the supervisor, at the recorder

S = "S32"  # short enum strings
Column = tuple[str, Any, tuple[int, ...]]  # name, dtype, per-row shape


# The simulated mouse's ground truth, one column per item (the `truth` table): the one definition of each
# dtype, and of the shape where it does not depend on the mouse. A live simulated session keeps shift and
# licks; `bcirig simulate` keeps all five. shift: brain motion (dy, dx) px in the registration's convention.
TRUTH_DTYPES = {"shift": "f4", "licks": "i2", "rpe": "f8", "rates": "f4", "spikes": "i2"}
TRUTH_SHAPES: dict[str, tuple[int, ...]] = {"shift": (2,), "licks": (), "rpe": ()}


def truth_fields(names: tuple[str, ...], **shapes: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{name: (per-row shape, dtype)}`` of these truth columns; ``shapes`` gives the mouse-sized ones."""
    return {n: (shapes.get(n, TRUTH_SHAPES.get(n, ())), TRUTH_DTYPES[n]) for n in names}


def tables(n_rois: int, truth_fields: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, list[Column]]:
    """Column definitions of every table for a session with ``n_rois`` ROIs."""
    truth: list[Column] = [("frame", np.int64, ())]
    truth += [(name, np.dtype(dtype), tuple(shape)) for name, (shape, dtype) in truth_fields.items()]
    return {
        "readout": [
            ("frame", np.int64, ()),
            ("seq", np.int64, ()),
            ("valid", np.bool_, ()),
            ("error", "S160", ()),
            ("shift", np.float32, (2,)),
            ("corr", np.float32, ()),
            ("F", np.float32, (n_rois,)),
            ("neuropil", np.float32, (n_rois,)),
            ("F0", np.float32, (n_rois,)),
            ("dff", np.float32, (n_rois,)),
            ("readout_raw", np.float64, ()),
            ("readout", np.float64, ()),
            ("t_ns", np.int64, (len(READOUT_STAMPS),)),
        ],
        "feedback": [
            ("frame", np.int64, ()),
            ("seq", np.int64, ()),
            ("phase", S, ()),
            ("state", S, ()),
            ("trial", np.int32, ()),
            ("trial_frame", np.int32, ()),
            ("screen", S, ()),
            ("angle_deg", np.float32, ()),
            ("sound", S, ()),
            ("tone_hz", np.float32, ()),
            ("reward", np.bool_, ()),
            ("opto", np.bool_, ()),
            ("readout_norm", np.float64, ()),
            ("threshold", np.float64, ()),
            ("lickport_mm", np.float64, ()),  # where the task put the lickport (absent from files before it)
            ("lickport_speed_mm_s", np.float64, ()),
            ("t_ns", np.int64, (len(FEEDBACK_STAMPS),)),
        ],
        "events": [
            ("frame", np.int64, ()),
            ("name", S, ()),
            ("trial", np.int32, ()),
            ("data", "S2048", ()),  # JSON
            ("t_ns", np.int64, ()),
        ],
        "commands": [
            ("frame", np.int64, ()),
            ("command_id", np.int64, ()),
            ("action", S, ()),
            ("reward_ul", np.float32, ()),
            ("opto_ms", np.float32, ()),
            ("open_ms", np.float32, ()),  # flush: the valve open time asked for (0 for the other actions)
            ("t_ns", np.int64, (len(COMMAND_STAMPS),)),
        ],
        "operator": [  # one row per experimenter's request the supervisor accepted and broadcast (#12)
            ("frame", np.int64, ()),  # the task's last frame when it arrived (from its heartbeat); the
            ("command_id", np.int64, ()),  # task's `operator` event with this id names the frame applied
            ("command", S, ()),  # messages.OperatorCommand
            ("value", np.float64, ()),  # reward: ul (0: the protocol's volume); flush: ms
            ("source", S, ()),  # the console that asked
            ("t_ns", np.int64, (len(OPERATOR_STAMPS),)),
        ],
        "acks": [
            ("frame", np.int64, ()),
            ("command_id", np.int64, ()),
            ("action", S, ()),
            ("ok", np.bool_, ()),
            ("error", "S160", ()),
            ("open_ms", np.float32, ()),
            ("device_ms", np.int64, ()),
            ("t_ns", np.int64, (len(ACK_STAMPS),)),
        ],
        "trials": [
            ("trial", np.int32, ()),
            ("start_frame", np.int64, ()),
            ("outcome", S, ()),
            ("outcome_frame", np.int64, ()),
            ("frames", np.int64, ()),
            ("reward_frame", np.int64, ()),  # a hit's reward command; -1 none (absent from files before it)
            ("phase", S, ()),  # the phase it ran in (closed_loop, degradation, ...; absent before version 3)
            ("catch", np.bool_, ()),  # a catch trial: no feedback shown (absent before version 3)
        ],
        "acquisition": [  # one row per frame that reached the pipeline: where it came from
            ("frame", np.int64, ()),
            ("acq_index", np.int64, ()),  # the microscope's own index of the image that completed it
            ("t_acq_ns", np.int64, ()),  # on the microscope's clock; -1 unknown
            ("t_arrive_ns", np.int64, ()),  # time.monotonic_ns() on the rig
            ("dropped", np.int64, ()),  # images lost (index gaps) since the previous frame
            ("malformed", np.int64, ()),  # images rejected (shape, dtype, plane) since the previous frame
        ],
        "presentation": [  # one row per feedback change the display or the speaker presented (version 3 on)
            ("frame", np.int64, ()),  # the imaging frame whose feedback it was
            ("device", S, ()),  # the node that presented it: display, sound
            ("what", S, ()),  # screen, angle, sound, tone
            ("screen", S, ()),
            ("angle_deg", np.float32, ()),
            ("sound", S, ()),
            ("tone_hz", np.float32, ()),
            ("code", np.int16, ()),  # photodiode patch code (bcirig.gui.photodiode); -1 none
            ("skipped", np.int32, ()),  # changes replaced before they could be presented
            ("sample", np.int64, ()),  # sound: first sample in the output stream; -1 display
            ("clock", S, ()),  # swap, raster, dac, callback, buffer (messages.PresentClock)
            ("t_update_ns", np.int64, ()),  # the feedback's arrival at the device node
            ("t_presented_ns", np.int64, ()),
        ],
        "lickport": [  # one row per frame the lickport node handled (absent from files before it; empty: no lickport)
            ("frame", np.int64, ()),
            ("commanded_mm", np.float64, ()),  # Feedback.lickport_mm: mm toward the mouse from the start (min_mm)
            ("speed_mm_s", np.float64, ()),  # Feedback.lickport_speed_mm_s
            ("measured_mm", np.float64, ()),  # the stage's reported position, same coordinates
            ("moving", np.bool_, ()),
            ("retracting", np.bool_, ()),  # after SAFE or at the end: going back to the start
            ("t_ns", np.int64, ()),  # when the stage's position reply was read
        ],
        "truth": truth,
        "calibration_windows": [
            ("start", np.int64, ()),
            ("maximum", np.float64, ()),
        ],
        "nodes": [  # one row per node at the end: its final counters, as JSON
            ("node", S, ()),
            ("counters", "S2048", ()),
        ],
    }
