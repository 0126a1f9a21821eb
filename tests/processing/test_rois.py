"""ROI geometry, validation messages and the HDF5-friendly round trip."""

from __future__ import annotations

import numpy as np
import pytest

from bcirig.processing import Roi, RoiError, RoiSet


def test_disk_of_radius_2_has_13_pixels_centred() -> None:
    roi = Roi.disk("a", 0, (10, 20), 2)
    assert roi.npix == 13  # 1 + 4 (d=1) + 4 (d=sqrt2) + 4 (d=2)
    assert roi.centroid_yx == (10.0, 20.0)
    assert set(zip(roi.y.tolist(), roi.x.tolist(), strict=True)) >= {(8, 20), (12, 20), (10, 18), (11, 21)}


def test_polygon_takes_pixel_centres_inside() -> None:
    roi = Roi.polygon("sq", 0, [(0.5, 0.5), (0.5, 3.5), (3.5, 3.5), (3.5, 0.5)])
    assert sorted(zip(roi.y.tolist(), roi.x.tolist(), strict=True)) == [(y, x) for y in (1, 2, 3) for x in (1, 2, 3)]
    tri = Roi.polygon("tri", 0, [(0, 0), (0, 10), (10, 0)])  # right triangle, area 50
    assert 40 <= tri.npix <= 60
    np.testing.assert_array_equal(tri.vertices_yx, [[0, 0], [0, 10], [10, 0]])


def test_mask_keeps_weights() -> None:
    w = np.zeros((8, 8))
    w[2, 3], w[4, 5] = 0.25, 0.75
    roi = Roi.mask("m", 0, w)
    assert sorted(zip(roi.y.tolist(), roi.x.tolist(), roi.w.tolist(), strict=True)) == [(2, 3, 0.25), (4, 5, 0.75)]


def test_empty_mask_names_the_roi() -> None:
    with pytest.raises(RoiError, match=r"ROI 'ghost': empty mask"):
        Roi.mask("ghost", 0, np.zeros((8, 8)))


def test_polygon_outside_frame_names_the_roi() -> None:
    rois = RoiSet([Roi.disk("ok", 0, (5, 5), 2), Roi.polygon("far", 0, [(60, 60), (60, 80), (80, 70)])])
    with pytest.raises(RoiError, match=r"ROI 'far': polygon lies \(partly\) outside the 64x64 frame"):
        rois.validate((1, 64, 64))


def test_plane_out_of_range_names_the_roi() -> None:
    rois = RoiSet([Roi.disk("up", 2, (5, 5), 2)])
    with pytest.raises(RoiError, match=r"ROI 'up': plane 2 out of range \(the frame has 2 plane\(s\)\)"):
        rois.validate((2, 64, 64))


def test_duplicate_names_and_missing_parent_rejected() -> None:
    with pytest.raises(RoiError, match="ROI 'a' appears twice"):
        RoiSet([Roi.disk("a", 0, (5, 5), 2), Roi.disk("a", 0, (20, 20), 2)])
    with pytest.raises(RoiError, match="ROI 'd1': parent soma 's9' is not in the ROI set"):
        RoiSet([Roi.disk("s1", 0, (5, 5), 2), Roi.disk("d1", 1, (5, 5), 2, kind="dendrite", parent="s9")])


def test_indices_by_group_kind_plane() -> None:
    rois = RoiSet([
        Roi.disk("p1", 0, (5, 5), 2, group="P+"),
        Roi.disk("m1", 0, (20, 5), 2, group="P-"),
        Roi.disk("d1", 1, (5, 5), 2, group="P+", kind="dendrite", parent="p1"),
        Roi.disk("p2", 0, (40, 5), 2, group="P+"),
    ])
    assert rois.indices(group="P+").tolist() == [0, 2, 3]
    assert rois.indices(group="P+", kind="soma").tolist() == [0, 3]
    assert rois.indices(plane=1).tolist() == [2]
    assert rois.names == ["p1", "m1", "d1", "p2"]
    assert rois.groups == ["P+", "P-", "P+", "P+"]


def test_to_arrays_round_trip_is_exact() -> None:
    w = np.zeros((16, 16))
    w[3:6, 4:7] = np.arange(9).reshape(3, 3) / 8 + 0.1
    rois = RoiSet([
        Roi.disk("s1", 0, (5.5, 6.25), 3.2, group="P+"),
        Roi.polygon("s2", 0, [(1, 1), (1, 9), (7.5, 4)], group="P-"),
        Roi.mask("dü", 1, w, group="none", kind="dendrite", parent="s1"),
    ])
    arrays = rois.to_arrays()
    for name, arr in arrays.items():
        assert arr.dtype.kind in "iufS", name  # numeric or fixed-width bytes only (HDF5 datasets)
    back = RoiSet.from_arrays(arrays)
    assert back.names == rois.names and back.groups == rois.groups
    for a, b in zip(rois, back, strict=True):
        assert (a.name, a.plane, a.group, a.kind, a.parent) == (b.name, b.plane, b.group, b.kind, b.parent)
        np.testing.assert_array_equal(a.y, b.y)
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.w, b.w)
        np.testing.assert_array_equal(a.vertices_yx, b.vertices_yx)
