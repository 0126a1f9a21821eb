"""The set-up editor's ROI operations (a plain object): what the operator's clicks and drags do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bcirig.gui.setup_editor import SetupEditor
from bcirig.processing.roi_files import load_rois
from bcirig.processing.rois import Roi, RoiError, RoiSet


def candidates() -> list[Roi]:
    """Three disk-shaped candidates, as detection gives them (masks named c<rank>)."""
    return [Roi.disk(f"c{k}", 0, centre, 3.0) for k, centre in enumerate([(10.0, 10.0), (10.0, 30.0), (40.0, 20.0)])]


def test_a_click_inside_a_candidate_picks_it_into_the_current_group() -> None:
    ed = SetupEditor((64, 64), candidates=candidates())
    assert ed.pick(11.0, 29.0) == 0  # inside candidate 1's disk: the first ROI
    ed.group = "P-"
    assert ed.pick(40.0, 21.0) == 1
    assert ed.picked_candidates() == [1, 2]
    rois = ed.roi_set()
    assert rois.names == ["P+0", "P-0"] and rois.groups == ["P+", "P-"]
    np.testing.assert_array_equal(rois[0].y, candidates()[1].y)  # the candidate's very pixels
    assert ed.pick(10.0, 30.0) == 0 and len(ed.rois) == 2  # a click on a taken candidate selects its ROI
    assert ed.pick(60.0, 60.0) is None and ed.selected is None  # nothing there


def test_a_click_near_but_outside_a_candidate_takes_the_nearest_within_its_radius() -> None:
    ed = SetupEditor((64, 64), candidates=candidates())
    assert ed.candidate_at(10.0, 13.4) == 0  # 3.4 px from centre 0: outside the disk, within sqrt(area/pi)
    assert ed.candidate_at(10.0, 20.0) is None  # 10 px from both


def test_polygons_are_added_moved_reshaped_and_deleted() -> None:
    ed = SetupEditor((64, 64))
    i = ed.add_polygon([[20, 20], [20, 30], [30, 30], [30, 20]])
    before = ed.roi_set()[i]
    ed.move(i, 2.0, -3.0)
    after = ed.roi_set()[i]
    assert after.centroid_yx == pytest.approx((before.centroid_yx[0] + 2, before.centroid_yx[1] - 3))
    assert after.npix == before.npix
    ed.move_vertex(i, 2, 40.0, 35.0)  # the far corner pulled out: a bigger quadrilateral
    assert ed.roi_set()[i].npix > before.npix
    assert ed.roi_at(25.0, 20.0) == i and ed.roi_at(5.0, 5.0) is None
    with pytest.raises(RoiError, match="outside the 64x64 image"):
        ed.move(i, 40.0, 0.0)
    with pytest.raises(RoiError, match="at least 3"):
        ed.add_polygon([[1, 1], [2, 2]])
    ed.delete(i)
    assert ed.rois == [] and ed.ready() == "no ROIs yet"


def test_groups_kinds_and_names_follow_the_assignments() -> None:
    ed = SetupEditor((64, 64), candidates=candidates())
    ed.pick(10, 10)
    ed.pick(10, 30)
    d = ed.add_polygon([[40, 18], [40, 22], [44, 22], [44, 18]])
    ed.assign(1, "P-")
    ed.set_kind(d, "dendrite", parent=1)
    rois = ed.roi_set()
    assert rois.names == ["P+0", "P-0", "P-0d"]
    assert (rois[2].kind, rois[2].parent, rois[2].group) == ("dendrite", "P-0", "P-")  # takes its soma's group
    with pytest.raises(RoiError, match="another soma"):
        ed.set_kind(0, "dendrite", parent=2)  # a dendrite cannot be a parent
    ed.delete(1)  # the soma goes: its dendrite becomes a soma of its own
    assert ed.roi_set().names == ["P+0", "P-0"] and ed.rois[1].kind == "soma"
    ed.assign(0, "E1")
    assert "E1" in ed.groups


def test_save_and_load_round_trip_through_the_roi_file(tmp_path: Path) -> None:
    ed = SetupEditor((64, 64), candidates=candidates())
    ed.pick(10, 10)
    ed.group = "P-"
    ed.add_polygon([[30, 40], [30, 50], [38, 45]])
    path = tmp_path / "rois.toml"
    ed.save(path)
    written = ed.roi_set().to_arrays()
    read = load_rois(path).to_arrays()
    assert {k: v.tolist() for k, v in read.items()} == {k: v.tolist() for k, v in written.items()}
    other = SetupEditor((64, 64))
    other.load(path)
    got = other.roi_set().to_arrays()
    assert {k: v.tolist() for k, v in got.items()} == {k: v.tolist() for k, v in written.items()}


def test_a_later_day_cannot_be_accepted_before_the_alignment_is_confirmed() -> None:
    ed = SetupEditor((64, 64), rois=RoiSet([Roi.disk("P+0", 0, (20, 20), 3, group="P+")]))
    ed.alignment = {"fov_offset_px": [1.0, -2.0], "alignment_quality": 0.9}
    assert "confirm" in ed.ready()
    ed.confirm_alignment(True)
    assert ed.ready() == ""
    with pytest.raises(RoiError, match="day 1"):
        SetupEditor((8, 8)).confirm_alignment(True)
