"""ROI files: bcirig's TOML ROI file, ImageJ / Fiji ROI sets (roifile) and suite2p output."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import roifile
from matplotlib.path import Path as MplPath
from roifile import ROI_SUBTYPE, ROI_TYPE, ImagejRoi

from bcirig.processing.roi_files import (
    PickleRefusedError,
    RoiFileError,
    load_imagej_rois,
    load_rois,
    load_suite2p,
    save_rois,
    suite2p_mean_image,
)
from bcirig.processing.rois import Roi, RoiError, RoiSet
from bcirig.sim import SimulatedMouse
from tests.sim.conftest import short_protocol, sim_config


def pixels(roi: Roi) -> set[tuple[int, int]]:
    """The (row, col) pixels of an ROI with a positive weight."""
    keep = roi.w > 0
    return set(zip(roi.y[keep].tolist(), roi.x[keep].tolist(), strict=True))


def centres_inside(xy_corner: np.ndarray, shape: tuple[int, int]) -> set[tuple[int, int]]:
    """Pixels whose centre (col + 0.5, row + 0.5) lies inside an ImageJ-coordinate polygon (matplotlib)."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
    inside = MplPath(xy_corner).contains_points(centres).reshape(shape)
    return set(zip(*(a.tolist() for a in np.nonzero(inside)), strict=True))


def assert_same_arrays(a: RoiSet, b: RoiSet) -> None:
    da, db = a.to_arrays(), b.to_arrays()
    assert da.keys() == db.keys()
    for key in da:
        assert da[key].dtype == db[key].dtype, key
        assert np.array_equal(da[key], db[key]), key


# ============================================================================================ ImageJ
def test_imagej_rectangle_covers_rows_30_to_39_and_columns_20_to_29(tmp_path: Path) -> None:
    rect = ImagejRoi(roitype=ROI_TYPE.RECT, left=20, top=30, right=30, bottom=40, name="P+0")
    rect.tofile(tmp_path / "rect.roi")
    (roi,) = load_imagej_rois(tmp_path / "rect.roi", plane=1)
    assert pixels(roi) == {(row, col) for row in range(30, 40) for col in range(20, 30)}
    assert (roi.name, roi.group, roi.kind, roi.plane) == ("P+0", "P+", "soma", 1)
    assert len(roi.vertices_yx) == 4  # kept as an outline: it moves exactly with the brain


def test_imagej_polygon_and_subpixel_polygon_cover_the_pixel_centres_inside(tmp_path: Path) -> None:
    corners = np.array([[10, 12], [24, 15], [19, 27], [13, 22]])  # ImageJ (x, y), integer
    sub = np.array([[40.3, 10.7], [52.9, 12.2], [47.5, 23.6]], np.float32)  # sub-pixel
    roifile.roiwrite(tmp_path / "set.zip", [ImagejRoi.frompoints(corners, name="poly"),
                                            ImagejRoi.frompoints(sub, name="sub")])
    poly, tri = load_imagej_rois(tmp_path / "set.zip")
    assert pixels(poly) == centres_inside(corners.astype(float), (64, 64))
    assert pixels(tri) == centres_inside(sub.astype(float), (64, 64))
    assert (poly.name, tri.name) == ("poly", "sub")


def test_imagej_oval_covers_the_pixel_centres_inside_the_ellipse(tmp_path: Path) -> None:
    oval = ImagejRoi(roitype=ROI_TYPE.OVAL, left=50, top=60, right=63, bottom=68, name="oval")
    oval.tofile(tmp_path / "oval.roi")
    (roi,) = load_imagej_rois(tmp_path / "oval.roi")
    rows, cols = np.mgrid[50:80, 40:75]
    inside = ((cols + 0.5 - 56.5) / 6.5) ** 2 + ((rows + 0.5 - 64.0) / 4.0) ** 2 <= 1.0
    assert pixels(roi) == set(zip(rows[inside].tolist(), cols[inside].tolist(), strict=True))
    assert roi.npix == int(inside.sum()) and roi.npix > 60


def test_imagej_composite_is_the_pixels_inside_an_odd_number_of_outlines(tmp_path: Path) -> None:
    # an outer square (x, y in [10, 20)) with a hole (x, y in [13, 16)), and a separate square
    path = [0, 10, 10, 1, 20, 10, 1, 20, 20, 1, 10, 20, 4,
            0, 13, 13, 1, 16, 13, 1, 16, 16, 1, 13, 16, 4,
            0, 40, 40, 1, 44, 40, 1, 44, 44, 1, 40, 44, 4]
    comp = ImagejRoi(roitype=ROI_TYPE.RECT, multi_coordinates=np.array(path, np.float32), shape_roi_size=len(path),
                     left=10, top=10, right=44, bottom=44, name="CN1")
    comp.tofile(tmp_path / "comp.roi")
    (roi,) = load_imagej_rois(tmp_path / "comp.roi")
    square = {(r, c) for r in range(10, 20) for c in range(10, 20)}
    hole = {(r, c) for r in range(13, 16) for c in range(13, 16)}
    other = {(r, c) for r in range(40, 44) for c in range(40, 44)}
    assert pixels(roi) == (square - hole) | other
    assert roi.group == "CN"


def test_imagej_names_groups_and_dendrites_from_the_convention_and_the_mapping(tmp_path: Path) -> None:
    def square(x: int, y: int, name: str) -> ImagejRoi:
        return ImagejRoi.frompoints([[x, y], [x + 6, y], [x + 6, y + 6], [x, y + 6]], name=name)

    rois = [square(5, 5, "P+0"), square(20, 5, "P-0"), square(35, 5, "P+0d"), square(5, 20, "E1_2"),
            square(20, 20, "E2_1"), square(35, 20, "cellA"), square(5, 35, "")]
    roifile.roiwrite(tmp_path / "RoiSet.zip", rois, name=["a", "b", "c", "d", "e", "f", "0042-0007"])
    loaded = load_imagej_rois(tmp_path / "RoiSet.zip", plane=2)
    assert loaded.names == ["P+0", "P-0", "P+0d", "E1_2", "E2_1", "cellA", "0042-0007"]
    assert loaded.groups == ["P+", "P-", "P+", "E1", "E2", "none", "none"]
    dend = loaded[2]
    assert (dend.kind, dend.parent) == ("dendrite", "P+0")
    assert all(r.plane == 2 for r in loaded)
    mapped = load_imagej_rois(tmp_path / "RoiSet.zip", groups={"cellA": "CN", "P+0": "E2"})
    assert mapped.groups == ["E2", "P-", "E2", "E1", "E2", "CN", "none"]  # the dendrite follows its soma
    with pytest.raises(RoiFileError, match="cellB"):
        load_imagej_rois(tmp_path / "RoiSet.zip", groups={"cellB": "CN"})


@pytest.mark.parametrize(
    ("roi", "what"),
    [
        (ImagejRoi(roitype=ROI_TYPE.LINE, x1=1, y1=2, x2=9, y2=6, name="axis"), "line"),
        (ImagejRoi.frompoints([[3, 4], [8, 9]], name="spots"), "2 vertices"),
        (ImagejRoi(roitype=ROI_TYPE.POINT, name="spots", left=3, top=4, right=4, bottom=5), "point"),
        (ImagejRoi(roitype=ROI_TYPE.RECT, subtype=ROI_SUBTYPE.TEXT, name="label", left=1, top=1, right=9, bottom=5),
         "text"),
    ],
)
def test_imagej_roi_types_without_an_area_are_refused_by_name(tmp_path: Path, roi: ImagejRoi, what: str) -> None:
    good = ImagejRoi(roitype=ROI_TYPE.RECT, left=1, top=1, right=5, bottom=5, name="ok")
    roifile.roiwrite(tmp_path / "set.zip", [good, roi])
    with pytest.raises(RoiFileError, match=rf"set\.zip: ROI #1 \('{roi.name}'\): .*{what}"):
        load_imagej_rois(tmp_path / "set.zip")


def test_imagej_unreadable_files_say_so(tmp_path: Path) -> None:
    with pytest.raises(RoiFileError, match="no such"):
        load_imagej_rois(tmp_path / "missing.zip")
    (tmp_path / "junk.roi").write_bytes(b"not an roi")
    with pytest.raises(RoiFileError, match=r"junk\.roi: not a readable ImageJ ROI"):
        load_imagej_rois(tmp_path / "junk.roi")


# ============================================================================================ suite2p
def write_suite2p(folder: Path, *, overlap: bool = False, allow_overlap: bool | None = None) -> list[dict[str, Any]]:
    """A plane folder in suite2p's layout: stat.npy (object array of dicts), iscell.npy, ops.npy (dict)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    stat = []
    for cy, cx in [(10, 12), (30, 40), (50, 20)]:
        yy, xx = np.mgrid[cy - 3:cy + 4, cx - 3:cx + 4]
        keep = (yy - cy) ** 2 + (xx - cx) ** 2 <= 9
        lam = rng.uniform(0.1, 1.0, int(keep.sum())).astype(np.float32)
        entry = {"ypix": yy[keep].astype(np.int32), "xpix": xx[keep].astype(np.int32), "lam": lam,
                 "med": [cy, cx], "npix": int(keep.sum()), "radius": 3.0}
        if overlap:
            entry["overlap"] = np.arange(int(keep.sum())) < 4
        stat.append(entry)
    np.save(folder / "stat.npy", np.array(stat, dtype=object), allow_pickle=True)
    np.save(folder / "iscell.npy", np.array([[1.0, 0.93], [0.0, 0.12], [1.0, 0.71]]))
    ops: dict[str, Any] = {"Ly": 64, "Lx": 80, "meanImg": rng.uniform(100, 200, (64, 80)).astype(np.float32)}
    if allow_overlap is not None:
        ops["allow_overlap"] = allow_overlap
    np.save(folder / "ops.npy", np.array(ops, dtype=object), allow_pickle=True)  # a 0-d object array, as suite2p's
    return stat


def test_suite2p_refuses_pickled_files_without_the_flag_and_says_why(tmp_path: Path) -> None:
    write_suite2p(tmp_path / "plane0")
    for load in (load_suite2p, suite2p_mean_image):
        with pytest.raises(PickleRefusedError) as err:
            load(tmp_path / "plane0")
        message = str(err.value)
        assert isinstance(err.value, ValueError)
        for words in ("pickled Python objects", "arbitrary code", "allow_pickle=True", "--allow-pickle", "trust"):
            assert words in message


def test_suite2p_masks_are_lam_weighted_and_only_cells_kept(tmp_path: Path) -> None:
    stat = write_suite2p(tmp_path / "suite2p" / "plane1")
    rois = load_suite2p(tmp_path / "suite2p" / "plane1", allow_pickle=True, plane=1)
    assert rois.names == ["s2p0", "s2p2"]  # iscell[:, 0] == 1 only
    for roi, k in zip(rois, (0, 2), strict=True):
        assert np.array_equal(roi.y, stat[k]["ypix"]) and np.array_equal(roi.x, stat[k]["xpix"])
        assert np.array_equal(roi.w, stat[k]["lam"])
        assert (roi.plane, roi.kind, roi.group) == (1, "soma", "none")
    rois.validate((2, 64, 80))
    everything = load_suite2p(tmp_path, allow_pickle=True, plane=1, only_cells=False)  # finds suite2p/plane1
    assert everything.names == ["s2p0", "s2p1", "s2p2"]
    mean = suite2p_mean_image(tmp_path / "suite2p" / "plane1", allow_pickle=True)
    assert mean.shape == (64, 80) and mean.dtype == np.float32


def test_suite2p_overlapping_pixels_are_dropped_as_suite2p_does(tmp_path: Path) -> None:
    stat = write_suite2p(tmp_path / "a", overlap=True)
    (first, _) = load_suite2p(tmp_path / "a", allow_pickle=True)
    assert np.array_equal(first.y, stat[0]["ypix"][4:]) and np.array_equal(first.w, stat[0]["lam"][4:])
    write_suite2p(tmp_path / "b", overlap=True, allow_overlap=True)
    (first, _) = load_suite2p(tmp_path / "b", allow_pickle=True)
    assert first.npix == len(stat[0]["ypix"])


def test_suite2p_errors_name_the_file_and_field(tmp_path: Path) -> None:
    with pytest.raises(RoiFileError, match=r"no suite2p stat\.npy"):
        load_suite2p(tmp_path, allow_pickle=True)
    write_suite2p(tmp_path / "p")
    np.save(tmp_path / "p" / "iscell.npy", np.ones((2, 2)))
    with pytest.raises(RoiFileError, match=r"iscell\.npy: shape \(2, 2\), expected \(3, 2\)"):
        load_suite2p(tmp_path / "p", allow_pickle=True)
    stat = np.load(tmp_path / "p" / "stat.npy", allow_pickle=True)
    del stat[1]["lam"]
    np.save(tmp_path / "p" / "stat.npy", stat, allow_pickle=True)
    with pytest.raises(RoiFileError, match=r"stat\.npy: ROI #1: lam: missing"):
        load_suite2p(tmp_path / "p", allow_pickle=True, only_cells=False)


# ============================================================================================ bcirig file
def example_set() -> RoiSet:
    poly = Roi.polygon("P+0", 1, [[10.0, 12.5], [14.25, 12.5], [16.0, 19.0], [9.5, 17.0]], group="P+")
    tri = Roi.polygon("P-0", 1, [[30, 30], [30, 38], [37, 34]], group="P-")
    reweighted = dataclasses.replace(tri, w=np.linspace(0.2, 1.0, len(tri.y), dtype=np.float32))
    rng = np.random.default_rng(1)
    weights = np.zeros((64, 64))
    weights[40:46, 50:55] = rng.uniform(0.05, 1.0, (6, 5))
    weights[42, 52] = 0.0
    return RoiSet([
        poly,
        reweighted,
        Roi.disk("E1_0", 1, (50.3, 20.7), 3.5, group="E1"),
        Roi.mask("c7", 1, weights, group="none"),
        Roi.disk("P+0d", 0, (11.0, 15.0), 2.4, group="P+", kind="dendrite", parent="P+0"),
        Roi.polygon("naïve \"quoted\" name", 0, [[1, 1], [1, 5], [5, 5]], group=""),
    ])


def test_bcirig_roi_file_round_trip_is_exact(tmp_path: Path) -> None:
    rois = example_set()
    save_rois(tmp_path / "rois.toml", rois)
    back = load_rois(tmp_path / "rois.toml")
    assert_same_arrays(rois, back)
    assert back.names == rois.names and back.groups == rois.groups
    moved = rois.moved(2.5, -1.0)
    save_rois(tmp_path / "moved.toml", moved)
    assert_same_arrays(moved, load_rois(tmp_path / "moved.toml"))


def test_bcirig_roi_file_round_trip_of_the_simulated_mouse(tmp_path: Path) -> None:
    protocol = short_protocol()
    rois = SimulatedMouse(protocol, sim_config(protocol), seed=1).rois()
    save_rois(tmp_path / "sim.toml", rois)
    assert_same_arrays(rois, load_rois(tmp_path / "sim.toml"))


def test_bcirig_roi_file_hand_written_geometries(tmp_path: Path) -> None:
    (tmp_path / "hand.toml").write_text('''
format = "bcirig-rois"
version = 1

[[roi]]   # a soma drawn by hand
name = "P+0"
group = "P+"
plane = 1
polygon = [[10, 12], [14, 12], [14, 18]]

[[roi]]
name = "P+0d"
kind = "dendrite"
parent = "P+0"
plane = 0
center = [40.5, 60]
radius = 4

[[roi]]
name = "w"
plane = 1
mask = [[3, 4, 0.5], [3, 5, 1]]
''')
    a, b, c = load_rois(tmp_path / "hand.toml")
    assert pixels(a) == pixels(Roi.polygon("x", 1, [[10, 12], [14, 12], [14, 18]]))
    assert (a.group, a.kind, b.group, b.kind, b.parent, c.group) == ("P+", "soma", "none", "dendrite", "P+0", "none")
    assert pixels(b) == pixels(Roi.disk("x", 0, (40.5, 60.0), 4.0))
    assert c.w.tolist() == [0.5, 1.0]


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ('name = "P-0"\nplane = 1\ncenter = [4, 4]\nradius = -2', r"roi #1 \('P-0'\): radius: expected a number > 0"),
        ('name = "P-0"\ncenter = [4, 4]\nradius = 2', r"roi #1 \('P-0'\): plane: required"),
        ('name = "P-0"\nplane = 1\nradius = 2', r"roi #1 \('P-0'\): center: a disk needs both"),
        ('name = "P-0"\nplane = 1', r"roi #1 \('P-0'\): polygon: no geometry"),
        ('name = "P-0"\nplane = 1\npolygon = [[1, 1], [2, "x"], [3, 1]]', r"roi #1 \('P-0'\): polygon\[1\]: expected"),
        ('name = "P-0"\nplane = 1\nmask = [[1, 1.5, 1.0]]', r"roi #1 \('P-0'\): mask\[0\]: pixel y and x"),
        ('name = "P-0"\nplane = 1\nmask = [[1, 1, 0.0]]', r"roi #1 \('P-0'\): .*empty mask"),
        ('name = "P-0"\nplane = 1\nkind = "axon"\ncenter = [4, 4]\nradius = 2', r"roi #1 \('P-0'\): kind: 'axon'"),
        ('name = "P-0"\nplane = 1\ncentre = [4, 4]\nradius = 2', r"roi #1 \('P-0'\): centre: unknown key"),
        ('plane = 1\ncenter = [4, 4]\nradius = 2', r"roi #1: name: a non-empty string is required"),
        ('name = "P+0"\nplane = 1\ncenter = [4, 4]\nradius = 2', r"ROI 'P\+0' appears twice"),
        ('name = "d"\nkind = "dendrite"\nparent = "zz"\nplane = 0\ncenter = [4, 4]\nradius = 2',
         r"parent soma 'zz' is not in the ROI set"),
    ],
)
def test_bcirig_roi_file_errors_name_the_file_entry_and_field(tmp_path: Path, entry: str, match: str) -> None:
    text = f'format = "bcirig-rois"\nversion = 1\n[[roi]]\nname = "P+0"\nplane = 1\ncenter = [9, 9]\nradius = 2\n' \
           f"[[roi]]\n{entry}\n"
    (tmp_path / "broken.toml").write_text(text)
    with pytest.raises(RoiFileError, match=rf"broken\.toml: .*{match}"):
        load_rois(tmp_path / "broken.toml")


def test_bcirig_roi_file_not_toml_or_not_ours(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text("format = \n")
    with pytest.raises(RoiFileError, match=r"a\.toml: not valid TOML: .*line 1"):
        load_rois(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text('[imaging]\nheight = 5\n')
    with pytest.raises(RoiFileError, match=r"b\.toml: format: expected 'bcirig-rois'"):
        load_rois(tmp_path / "b.toml")
    with pytest.raises(RoiFileError, match="cannot read"):
        load_rois(tmp_path / "none.toml")
    assert issubclass(RoiFileError, RoiError) and issubclass(RoiFileError, ValueError)
