"""Pipeline end to end: extraction on hand-built frames, ROIs following motion, bad frames, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from bcirig.processing import Pipeline, Roi, RoiError, RoiSet, make_reference

from .conftest import make_protocol, smooth_image

NP = "neuropil_coefficient = 0.0\nneuropil_inner_px = 2.0\nneuropil_outer_px = 8.0"


def disk_mask(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.asarray((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r, dtype=bool)


def two_cell_frame() -> np.ndarray:
    """10 everywhere, 100 inside cell a (r=4 at 20,20), 1000 inside cell b (r=3 at 20,30), inside a's annulus."""
    img = np.full((64, 64), 10, np.uint16)
    img[disk_mask(img.shape, 20, 20, 4)] = 100
    img[disk_mask(img.shape, 20, 30, 3)] = 1000
    return img[None]


def two_cells() -> RoiSet:
    return RoiSet([Roi.disk("a", 0, (20, 20), 4, group="P+"), Roi.disk("b", 0, (20, 30), 3, group="P-")])


def test_extraction_on_hand_built_frame_and_neuropil_excludes_other_rois() -> None:
    pipe = Pipeline(make_protocol(readout=NP), two_cells(), np.zeros((1, 64, 64), np.float32))
    r = pipe.process(two_cell_frame(), 0)
    assert r.valid, r.error
    np.testing.assert_array_equal(r.F, [100.0, 1000.0])
    np.testing.assert_array_equal(r.neuropil, [10.0, 10.0])  # b's bright pixels are not in a's annulus
    assert r.F.dtype == np.float32 and r.dff.dtype == np.float32 and r.F0.dtype == np.float32
    np.testing.assert_array_equal(r.shift, [0.0, 0.0])


def test_neuropil_annulus_geometry() -> None:
    protocol = make_protocol(readout=NP, decoder='name = "single_neuron"\nroi = "a"')
    pipe = Pipeline(protocol, RoiSet([Roi.disk("a", 0, (32, 32), 4)]), np.zeros((1, 64, 64), np.float32))
    # pixels at distance (2, 8] from the nearest ROI pixel: between radius ~6 and ~12 around the centre
    area = np.pi * (12**2 - 6**2)
    assert pipe.extractor.neuropil_npix[0] == pytest.approx(area, rel=0.12)
    img = np.full((1, 64, 64), 10, np.uint16)
    img[0][disk_mask((64, 64), 32, 32, 5.5)] = 100  # bright rim within 2 px of the ROI: excluded
    img[0][~disk_mask((64, 64), 32, 32, 13)] = 1000  # beyond 8 px (+ radius 4): excluded
    r = pipe.process(img, 0)
    assert r.neuropil[0] == 10.0


def test_weighted_mask_is_a_weighted_mean() -> None:
    w = np.zeros((64, 64))
    w[10, 10], w[10, 11] = 1.0, 3.0
    img = np.full((1, 64, 64), 10, np.uint16)
    img[0, 10, 10], img[0, 10, 11] = 20, 60
    protocol = make_protocol(readout=NP, decoder='name = "single_neuron"\nroi = "m"')
    pipe = Pipeline(protocol, RoiSet([Roi.mask("m", 0, w)]), np.zeros((1, 64, 64), np.float32))
    assert pipe.process(img, 0).F[0] == pytest.approx((20 + 3 * 60) / 4)


def test_each_roi_is_read_from_its_own_plane() -> None:
    protocol = make_protocol(planes=2, bci_plane=1, readout=NP)
    rois = RoiSet([
        Roi.disk("s", 1, (20, 20), 4, group="P+"),
        Roi.disk("m", 1, (45, 45), 4, group="P-"),
        Roi.disk("d", 0, (20, 20), 4, kind="dendrite", parent="s"),
    ])
    frame = np.full((2, 64, 64), 10, np.uint16)
    frame[0][disk_mask((64, 64), 20, 20, 4)] = 50
    frame[1][disk_mask((64, 64), 20, 20, 4)] = 300
    r = Pipeline(protocol, rois, np.zeros((2, 64, 64), np.float32)).process(frame, 0)
    np.testing.assert_array_equal(r.F, [300.0, 10.0, 50.0])


def textured_cells(rng: np.random.Generator) -> tuple[np.ndarray, RoiSet]:
    """A smooth background with two bright cells, and their ROIs."""
    img = 100 + 300 * smooth_image(96, rng, sigma=2.0)
    img[disk_mask(img.shape, 40, 40, 4)] = 2000
    img[disk_mask(img.shape, 60, 30, 4)] = 1500
    rois = RoiSet([Roi.disk("a", 0, (40, 40), 4, group="P+"), Roi.disk("b", 0, (60, 30), 4, group="P-")])
    return img, rois


def test_rois_follow_the_measured_motion() -> None:
    rng = np.random.default_rng(3)
    img, rois = textured_cells(rng)
    protocol = make_protocol(height=96, width=96, readout=NP, registration="enabled = true\nmax_shift_px = 10")
    pipe = Pipeline(protocol, rois, img[None].astype(np.float32))
    moved = np.roll(img, (4, -3), axis=(0, 1)).astype(np.uint16)[None]
    r = pipe.process(moved, 0)
    np.testing.assert_allclose(r.shift, [4.0, -3.0], atol=0.1)
    np.testing.assert_allclose(r.F, [2000.0, 1500.0], rtol=0.02)  # without following: far lower
    still = Pipeline(make_protocol(height=96, width=96, readout=NP), rois, img[None].astype(np.float32))
    assert still.process(moved, 0).F[0] < 1500


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (np.zeros((1, 32, 64), np.uint16), "frame 17: shape (1, 32, 64) != expected (1, 64, 64)"),
        (np.zeros((1, 64, 64), np.float32), "frame 17: dtype float32 != expected uint16"),
        (np.full((1, 64, 64), np.nan, np.float64), "frame 17: dtype float64 != expected uint16"),
        ([[1, 2]], "frame 17: not an array (list)"),
    ],
)
def test_bad_frame_is_reported_counted_and_not_raised(frame: object, message: str) -> None:
    pipe = Pipeline(make_protocol(readout=NP), two_cells(), np.zeros((1, 64, 64), np.float32))
    r = pipe.process(frame, 17)  # type: ignore[arg-type]  # deliberately not an array: the bad input under test
    assert (r.valid, r.error, r.frame) == (False, message, 17)
    assert pipe.bad_frames == 1 and pipe.frames == 0
    assert r.dff.shape == r.F.shape == r.F0.shape == r.neuropil.shape == (2,)  # rows keep the ROI count
    assert np.all(np.isnan(r.dff)) and np.all(np.isnan(r.shift)) and np.isnan(r.readout)


def test_nan_in_float_frames_and_traces_is_rejected() -> None:
    protocol = make_protocol(readout=NP)
    pipe = Pipeline(protocol, two_cells(), np.zeros((1, 64, 64), np.float32))
    pipe.dtype = np.dtype(np.float32)  # a float source (e.g. a preprocessed replay) must still be finite
    frame = np.full((1, 64, 64), 10, np.float32)
    frame[0, 5, 5] = np.nan
    assert pipe.process(frame, 3).error == "frame 3: contains NaN or infinite pixels"
    r = pipe.process_traces(np.array([1.0, np.inf]), np.zeros(2), 4)
    assert (r.valid, r.error) == (False, "frame 4: F contains NaN or infinite values")
    assert pipe.process_traces(np.ones(3), np.zeros(3), 5).error == "frame 5: F shape (3,) != expected (2,)"
    assert pipe.bad_frames == 3


def test_bad_frames_do_not_change_state_and_replay_is_bit_identical() -> None:
    rng = np.random.default_rng(4)
    img, rois = textured_cells(rng)
    protocol = make_protocol(height=96, width=96, readout="neuropil_coefficient = 0.7",
                             registration="enabled = true\nmax_shift_px = 6", smoothing='kind = "ema"\nalpha = 0.3')
    frames = []
    for _ in range(30):
        shifted = np.roll(img, tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
        frames.append(rng.poisson(shifted).astype(np.uint16)[None])
    ref = make_reference(np.array(frames[:10]))
    a = Pipeline(protocol, rois, ref)
    b = Pipeline(protocol, rois, ref)
    clean, mixed = [], []
    for i, f in enumerate(frames):
        clean.append(a.process(f, i))
        if i % 7 == 3:
            assert not b.process(f[:, :50], i).valid
            assert not b.process(f.astype(np.float32), i).valid
        mixed.append(b.process(f, i))
    assert b.bad_frames == 8 and a.bad_frames == 0  # frames 3, 10, 17, 24, twice each
    for x, y in zip(clean, mixed, strict=True):
        assert x.readout == y.readout and x.readout_raw == y.readout_raw and x.corr == y.corr
        for name in ("shift", "F", "neuropil", "F0", "dff"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name))
    assert set(clean[0].t_ns) == {"arrive", "registered", "extracted", "decoded"}
    assert clean[-1].t_ns["arrive"] <= clean[-1].t_ns["registered"] <= clean[-1].t_ns["decoded"]


def test_reference_and_roi_mismatches_fail_at_construction() -> None:
    protocol = make_protocol(readout=NP)
    with pytest.raises(ValueError, match=r"reference shape \(1, 32, 32\) != frame shape \(1, 64, 64\)"):
        Pipeline(protocol, two_cells(), np.zeros((1, 32, 32), np.float32))
    with pytest.raises(RoiError, match="ROI 'edge'"):
        Pipeline(protocol, RoiSet([Roi.disk("edge", 0, (62, 30), 4, group="P+")]), np.zeros((1, 64, 64), np.float32))


def test_make_reference_is_the_mean_image() -> None:
    frames = np.stack([np.full((2, 4, 4), v, np.uint16) for v in (1, 2, 6)])
    ref = make_reference(frames)
    assert ref.dtype == np.float32 and ref.shape == (2, 4, 4)
    np.testing.assert_array_equal(ref, np.full((2, 4, 4), 3.0))


def test_piecewise_mode_moves_each_roi_with_its_own_patch() -> None:
    rng = np.random.default_rng(5)
    img = 100 + 300 * smooth_image(192, rng, sigma=2.0)
    img[disk_mask(img.shape, 60, 50, 4)] = 2000
    img[disk_mask(img.shape, 50, 140, 4)] = 1800
    rois = RoiSet([Roi.disk("left", 0, (60, 50), 4, group="P+"), Roi.disk("right", 0, (50, 140), 4, group="P-")])
    protocol = make_protocol(height=192, width=192, readout=NP,
                             registration='enabled = true\nmode = "piecewise"\npatches = 2\nmax_shift_px = 8')
    pipe = Pipeline(protocol, rois, img[None].astype(np.float32))
    moved = np.roll(img, (3, 0), axis=(0, 1))
    moved[:, 96:] = np.roll(img, (-2, 2), axis=(0, 1))[:, 96:]  # the right half moves differently
    r = pipe.process(moved.astype(np.uint16)[None], 0)
    np.testing.assert_allclose(r.F, [2000.0, 1800.0], rtol=0.03)
    np.testing.assert_allclose(r.shift, [0.5, 1.0], atol=0.2)  # the mean of the four patch shifts


def test_pipeline_is_a_pipeline_stage() -> None:
    from bcirig.interfaces import PipelineStage

    pipe = Pipeline(make_protocol(readout=NP), two_cells(), np.zeros((1, 64, 64), np.float32))
    assert isinstance(pipe, PipelineStage)  # the method names; the contract's behaviour:
    bad = pipe.process(np.zeros((1, 64, 32), np.uint16), 7)  # a bad frame returns, never raises
    assert not bad.valid and bad.frame == 7 and "shape" in bad.error and np.isnan(bad.F).all()
    good = pipe.process(np.full((1, 64, 64), 100, np.uint16), 8)
    assert good.valid and good.frame == 8 and good.F.shape == (2,) and np.isfinite(good.F).all()


def test_day_two_alignment_moves_yesterdays_rois_onto_todays_cells() -> None:
    from bcirig.processing.registration import align_fov

    rng = np.random.default_rng(8)
    yesterday, rois = textured_cells(rng)
    rois = RoiSet([*rois, Roi.polygon("poly", 0, [(20.5, 60.5), (20.5, 66.5), (26.5, 63.5)], group="none")])
    today = np.roll(yesterday, (5, -7), axis=(0, 1))  # the field moved by (+5, -7) overnight
    dy, dx, corr = align_fov(today[None], yesterday[None])
    assert (dy, dx) == pytest.approx((5.0, -7.0), abs=0.1) and corr > 0.9
    moved = rois.moved(dy, dx)
    assert [r.name for r in moved] == ["a", "b", "poly"]
    assert moved[0].centroid_yx == pytest.approx((45.0, 33.0))  # (40, 40) + (5, -7)
    np.testing.assert_allclose(moved[2].vertices_yx[0], [25.5, 53.5], atol=0.11)
    assert moved[2].npix == rois[2].npix
    pipe = Pipeline(make_protocol(height=96, width=96, readout=NP), moved, today[None].astype(np.float32))
    np.testing.assert_array_equal(pipe.process(today.astype(np.uint16)[None], 0).F[:2], [2000.0, 1500.0])
