"""The assembler stage: checks against [imaging], exact drop and rejection counts, planes -> volumes."""

from __future__ import annotations

import numpy as np

from bcirig.acquisition import RawFrame
from bcirig.acquisition.assembler import FrameAssembler
from bcirig.config import Imaging


def img(value: int, shape: tuple[int, int] = (8, 10), dtype: str = "uint16") -> np.ndarray:
    return np.full(shape, value, dtype)


def test_index_gaps_are_dropped_frames_and_rejections_are_counted_on_the_next_volume() -> None:
    asm = FrameAssembler(Imaging(height=8, width=10))
    out = [asm.push(RawFrame(img(i), index=i)) for i in (0, 1, 2, 5, 6)]  # 3 and 4 never arrived
    out.append(asm.push(RawFrame(img(7, (8, 5)), index=7)))  # half a frame: rejected
    out.append(asm.push(RawFrame(np.full((8, 10), 8, np.uint8), index=8)))  # wrong dtype: rejected
    out.append(asm.push(RawFrame(img(9), index=9)))
    volumes = [v for v in out if v is not None]
    assert [v.frame for v in volumes] == [0, 1, 2, 3, 4, 5]  # the session's frames stay consecutive
    assert [v.acq_index for v in volumes] == [0, 1, 2, 5, 6, 9]
    assert [v.dropped for v in volumes] == [0, 0, 0, 2, 0, 0]
    assert [v.malformed for v in volumes] == [0, 0, 0, 0, 0, 2]
    assert [int(v.data[0, 0, 0]) for v in volumes] == [0, 1, 2, 5, 6, 9]
    assert asm.counters() == {"frames": 6, "dropped_frames": 2, "malformed_frames": 2, "acquisition_restarts": 0}
    assert "dtype uint8 != expected uint16" in asm.last_error and "frame 8" in asm.last_error


def test_an_index_that_goes_back_is_a_restart_not_a_drop() -> None:
    asm = FrameAssembler(Imaging(height=8, width=10))
    for i in (10, 11, 0, 1):  # a new acquisition counts from 0 again
        asm.push(RawFrame(img(i), index=i))
    assert asm.counters()["acquisition_restarts"] == 1 and asm.dropped == 0


def test_two_planes_make_one_volume_on_each_bci_plane_frame() -> None:
    asm = FrameAssembler(Imaging(height=8, width=10, planes=2, bci_plane=1))
    # plane unknown (-1): index modulo planes; the BCI plane (1) completes each volume
    vols = [asm.push(RawFrame(img(100 + i), index=i)) for i in range(6)]
    assert [v is not None for v in vols] == [False, True, False, True, False, True]
    v = vols[3]
    assert v is not None and v.data.shape == (2, 8, 10) and v.acq_index == 3
    assert (v.data[0] == 102).all() and (v.data[1] == 103).all()  # each plane's newest image
    # an explicit plane out of range is rejected
    assert asm.push(RawFrame(img(1), index=6, plane=2)) is None and asm.malformed == 1


def test_bci_plane_first_uses_the_newest_other_plane_and_waits_until_every_plane_was_seen() -> None:
    asm = FrameAssembler(Imaging(height=8, width=10, planes=2, bci_plane=0))
    first = asm.push(RawFrame(img(1), index=0, plane=0))
    assert first is None  # plane 1 never seen yet: no volume with an empty plane
    asm.push(RawFrame(img(2), index=1, plane=1))
    v = asm.push(RawFrame(img(3), index=2, plane=0))
    assert v is not None and (v.data[0] == 3).all() and (v.data[1] == 2).all()
