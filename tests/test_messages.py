"""Wire format: every message survives the round trip; bad input gets a named error."""

import json
from typing import TypeVar

import numpy as np
import pytest

from bcirig.messages import (
    Action,
    Command,
    Event,
    EventKind,
    Feedback,
    Frame,
    Message,
    Phase,
    Readout,
    Screen,
    WireError,
    decode,
    encode,
)

M = TypeVar("M", bound=Message)


def roundtrip(msg: M) -> M:
    back = decode([bytes(p) for p in encode(msg)])
    assert type(back) is type(msg)
    return back


def test_frame_array_travels_as_raw_buffer_and_comes_back_equal() -> None:
    data = np.arange(2 * 8 * 6, dtype=np.uint16).reshape(2, 8, 6)
    shift = np.array([0.5, -1.0], np.float32)
    parts = encode(Frame(frame=41, data=data, truth={"shift": shift, "licks": 2}, t_ns={"source": 123}))
    # pixels, then the truth's array: each a raw buffer; only the scalar lick count is in the header
    assert len(parts) == 4 and bytes(parts[2]) == data.tobytes() and bytes(parts[3]) == shift.tobytes()
    assert json.loads(bytes(parts[1]))["f"]["truth"] == {"licks": 2}
    back = decode([bytes(p) for p in parts])
    assert isinstance(back, Frame)
    assert back.frame == 41 and back.t_ns == {"source": 123} and back.truth["licks"] == 2
    assert back.truth["shift"].dtype == np.float32 and back.truth["shift"].tolist() == [0.5, -1.0]
    np.testing.assert_array_equal(back.data, data)
    assert back.data.dtype == np.uint16


def test_a_list_in_a_header_field_is_refused_naming_the_field() -> None:
    frame = Frame(frame=1, data=np.zeros((1, 2, 2), np.uint16), truth={"shift": [0.5, -1.0]})
    with pytest.raises(WireError, match=r"^frame\.truth\['shift'\] is a list: a header holds scalars only"):
        encode(frame)
    with pytest.raises(WireError, match=r"^feedback\.angle_deg is a ndarray: a header holds scalars only"):
        encode(Feedback(frame=1, angle_deg=np.array([1.0, 2.0])))  # type: ignore[arg-type]  # the bad input under test
    # an event's data is a JSON record (once per trial or session): the calibration's windows may be lists
    e = roundtrip(Event(frame=5, name=EventKind.CALIBRATION, data={"window_starts": [1, 2], "threshold": 0.3}))
    assert e.data == {"window_starts": [1, 2], "threshold": 0.3}


def test_readout_feedback_command_event_roundtrip_with_enums_and_nan() -> None:
    r = roundtrip(Readout(frame=3, F=np.array([1.5, 2.5], np.float32), readout=float("nan"), valid=False,
                          error="frame 3: shape"))
    assert np.isnan(r.readout) and r.valid is False and r.F.tolist() == [1.5, 2.5]
    f = roundtrip(Feedback(frame=9, phase=Phase.CLOSED_LOOP, screen=Screen.GRATING, angle_deg=45.0, reward=True))
    assert f.phase is Phase.CLOSED_LOOP and f.screen is Screen.GRATING and f.angle_deg == 45.0 and f.reward
    c = roundtrip(Command(frame=2, command_id=7, action=Action.REWARD_OPTO, reward_ul=4.0))
    assert c.action is Action.REWARD_OPTO and c.command_id == 7
    e = roundtrip(Event(frame=5, name=EventKind.TRIAL_END, trial=2, data={"outcome": "hit"}))
    assert e.name is EventKind.TRIAL_END and e.data == {"outcome": "hit"}


def test_header_is_plain_json_naming_kind_and_version() -> None:
    header = json.loads(bytes(encode(Readout(frame=1))[1]))
    assert header["kind"] == "readout" and header["v"] == 1 and header["frame"] == 1


def test_wrong_version_unknown_kind_and_missing_buffers_are_named() -> None:
    topic, head, *bufs = [bytes(p) for p in encode(Readout(frame=1))]
    h = json.loads(head)
    h["v"] = 99
    with pytest.raises(WireError, match="'readout' has version 99"):
        decode([topic, json.dumps(h).encode(), *bufs])
    h["v"], h["kind"] = 1, "pickle"
    with pytest.raises(WireError, match="unknown message kind 'pickle'"):
        decode([topic, json.dumps(h).encode(), *bufs])
    with pytest.raises(WireError, match="5 array"):
        decode([topic, head])
    with pytest.raises(WireError, match="malformed"):
        decode([topic, b"\x80garbage"])
