"""Every decoder formula on hand-computed numbers, smoothing, and the errors a user would see."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bcirig.processing import DECODERS, Pipeline, Roi, RoiError, RoiSet
from bcirig.processing.decoders import Pca, group_signs, make_decoder
from bcirig.schema import ConfigError

from .conftest import make_protocol


def roiset(groups: list[str], plane: int = 0) -> RoiSet:
    """One disk ROI per group entry, named r0, r1, ... on a 64x64 plane."""
    return RoiSet(
        Roi.disk(f"r{i}", plane, (8 + 12 * (i // 4), 8 + 14 * (i % 4)), 3, group=g) for i, g in enumerate(groups)
    )


def decode(decoder: str, groups: list[str], dff: list[float], **kw: Any) -> float:
    protocol = make_protocol(decoder=decoder, **kw)
    dec = make_decoder(protocol, roiset(groups))
    return dec.decode(np.array(dff), np.array(dff))


def test_registry_has_all_decoders() -> None:
    assert {"two_population", "ensemble", "single_neuron", "weighted", "pca", "spike_rate"} <= set(DECODERS)


@pytest.mark.parametrize(("decoder", "groups"), [
    ('name = "two_population"', ["P+", "P-"]),
    ('name = "two_population"\nplus = "up"\nminus = "down"', ["down", "up"]),
    ('name = "ensemble"', ["E1", "E2"]),
    ('name = "ensemble"\norder = "E1-E2"', ["E1", "E2"]),
])
def test_each_group_sign_is_the_direction_that_raises_the_readout(decoder: str, groups: list[str]) -> None:
    # what the simulated brain learns towards: raising a group the decoder calls +1 raises the readout
    protocol = make_protocol(decoder=decoder)
    signs = group_signs(protocol.readout.decoder, groups)
    dec = make_decoder(protocol, roiset(groups * 2))
    base = np.full(2 * len(groups), 0.2)
    for g, sign in zip(groups, signs, strict=True):
        raised = base + 0.1 * np.array([x == g for x in groups * 2])
        change = dec.decode(raised, raised) - dec.decode(base, base)
        assert np.sign(change) == sign, (g, change)


def test_groups_a_decoder_does_not_name_take_their_sign_from_the_name() -> None:
    assert group_signs({"name": "two_population"}, ["P+", "P-"]) == [1.0, -1.0]
    assert group_signs({"name": "ensemble", "order": "E1-E2"}, ["E1", "E2"]) == [1.0, -1.0]
    assert group_signs({"name": "single_neuron", "roi": "r0"}, ["A+", "B-", "C"]) == [1.0, -1.0, -1.0]
    assert group_signs({"name": "single_neuron", "roi": "r0"}, ["A", "B"]) == [1.0, -1.0]  # first up
    assert group_signs({"name": "spike_rate", "group": "G", "minus": "H"}, ["H", "G"]) == [-1.0, 1.0]


def test_two_population_is_mean_plus_minus_mean_minus() -> None:
    # P+ = [0.2, 0.4] (mean 0.3), P- = [0.1, 0.3] (mean 0.2) -> 0.1
    got = decode('name = "two_population"', ["P+", "P-", "P+", "P-"], [0.2, 0.1, 0.4, 0.3])
    assert got == pytest.approx(0.1)


def test_two_population_custom_groups_and_one_population() -> None:
    assert decode('name = "two_population"\nplus = "A"\nminus = "B"', ["A", "B", "none"], [0.5, 0.2, 9.0]) == (
        pytest.approx(0.3)
    )
    assert decode('name = "two_population"\nminus = ""', ["P+", "P+", "P-"], [0.2, 0.6, 5.0]) == pytest.approx(0.4)


def test_two_population_ignores_dendrites_and_other_planes() -> None:
    protocol = make_protocol(planes=2, bci_plane=1)
    rois = RoiSet([
        Roi.disk("s1", 1, (10, 10), 3, group="P+"),
        Roi.disk("s2", 1, (30, 30), 3, group="P-"),
        Roi.disk("d1", 0, (10, 10), 3, group="P+", kind="dendrite", parent="s1"),
        Roi.disk("s3", 0, (40, 40), 3, group="P+"),  # soma, but not on the BCI plane
    ])
    dec = make_decoder(protocol, rois)
    assert dec.decode(np.array([0.5, 0.1, 100.0, 100.0]), np.zeros(4)) == pytest.approx(0.4)


def test_ensemble_difference_both_orders_and_e1_constraint() -> None:
    groups, dff = ["E1", "E1", "E2", "E2"], [0.1, 0.3, 0.6, 0.8]  # E1 mean 0.2, E2 mean 0.7
    assert decode('name = "ensemble"', groups, dff) == pytest.approx(0.5)
    assert decode('name = "ensemble"\norder = "E1-E2"', groups, dff) == pytest.approx(-0.5)
    assert decode('name = "ensemble"\ne1_max = 0.25', groups, dff) == pytest.approx(0.5)  # E1 0.2 <= 0.25
    assert decode('name = "ensemble"\ne1_max = 0.15', groups, dff) == 0.0  # E1 too active: capped at 0
    assert decode('name = "ensemble"\ne1_max = 0.15', groups, [0.1, 0.3, 0.0, 0.1]) == pytest.approx(-0.15)


def test_single_neuron_and_weighted() -> None:
    groups = ["none", "none", "none"]
    assert decode('name = "single_neuron"\nroi = "r1"', groups, [0.1, 0.7, 0.3]) == pytest.approx(0.7)
    got = decode('name = "weighted"\nweights = { r0 = 2.0, r2 = -0.5 }', groups, [0.1, 0.7, 0.3])
    assert got == pytest.approx(2 * 0.1 - 0.5 * 0.3)


def test_pca_projects_on_the_baseline_direction() -> None:
    protocol = make_protocol(decoder='name = "pca"')
    dec = make_decoder(protocol, roiset(["none"] * 3))
    rng = np.random.default_rng(0)
    latent = rng.normal(size=500)
    direction = np.array([3.0, 4.0, 0.0]) / 5.0
    base = 1.0 + latent[:, None] * direction + 0.01 * rng.normal(size=(500, 3))
    assert np.isnan(dec.decode(np.ones(3), np.ones(3)))  # not fitted yet
    dec.fit(base)
    mean = base.mean(axis=0)
    # moving 1 unit along the direction from the mean reads ~ +1 (sign fixed: largest loading positive)
    assert dec.decode(mean + direction, mean) == pytest.approx(1.0, abs=0.01)
    assert dec.decode(mean + np.array([0.0, 0.0, 1.0]), mean) == pytest.approx(0.0, abs=0.02)


def test_pca_fits_on_the_first_half_of_the_baseline_by_default() -> None:
    dec = make_decoder(make_protocol(decoder='name = "pca"'), roiset(["none"] * 3))
    assert isinstance(dec, Pca) and dec.fit_frames == 20  # baseline.frames = 40


def test_pipeline_fits_pca_after_fit_frames_and_keeps_baseline_readouts() -> None:
    protocol = make_protocol(decoder='name = "pca"\nfit_frames = 30', f0='kind = "running_mean"\nwindow_frames = 1000')
    pipe = Pipeline(protocol, roiset(["none"] * 3), np.zeros((1, 64, 64), np.float32))
    rng = np.random.default_rng(1)
    outs = [pipe.process_traces(100 + rng.normal(size=3), np.zeros(3), i).readout_raw for i in range(31)]
    assert all(np.isnan(outs[:29]))
    assert np.isfinite(outs[29]) and np.isfinite(outs[30])
    assert pipe.fit_readouts is not None and pipe.fit_readouts.shape == (30,)
    assert pipe.fit_readouts[-1] == outs[29]


def test_spike_rate_counts_threshold_crossings() -> None:
    protocol = make_protocol(
        decoder='name = "spike_rate"\ngroup = "P+"\nthreshold_sd = 3.0\nhighpass_frames = 5\n'
        "rate_frames = 100\nsd_frames = 100",
        signal='signal = "spike_rate"',
    )
    dec = make_decoder(protocol, roiset(["P+"]))
    rng = np.random.default_rng(2)
    trace = 100 + rng.normal(0, 1, 100)
    spikes = [20, 40, 60, 80]
    trace[spikes] += 30  # 4 clear spikes (30 SD) in 100 frames at 30 Hz
    for v in trace:
        rate = dec.decode(np.zeros(1), np.array([v]))
    assert rate == pytest.approx(4 / (100 / 30.0))  # 1.2 Hz


def test_moving_mean_of_3_and_ema() -> None:
    protocol = make_protocol(decoder='name = "single_neuron"\nroi = "r0"', smoothing='kind = "moving_mean"\nframes = 3',
                             f0='kind = "running_mean"\nwindow_frames = 1000')
    pipe = Pipeline(protocol, roiset(["none"]), np.zeros((1, 64, 64), np.float32))
    # F0 = running mean from frame 0 -> dff: 0, 1/3 (F=200, F0=150), ...
    f = [100.0, 200.0, 100.0, 100.0]
    r = [pipe.process_traces(np.array([v]), np.zeros(1), i) for i, v in enumerate(f)]
    dff = [0.0, 200 / 150 - 1, 100 / (400 / 3) - 1, 100 / 125 - 1]
    np.testing.assert_allclose([x.readout_raw for x in r], dff, rtol=1e-6)
    expected = [dff[0], (dff[0] + dff[1]) / 2, sum(dff[:3]) / 3, sum(dff[1:4]) / 3]
    np.testing.assert_allclose([x.readout for x in r], expected, rtol=1e-6)

    protocol = make_protocol(decoder='name = "single_neuron"\nroi = "r0"', smoothing='kind = "ema"\nalpha = 0.25',
                             f0='kind = "running_mean"\nwindow_frames = 1000')
    pipe = Pipeline(protocol, roiset(["none"]), np.zeros((1, 64, 64), np.float32))
    r = [pipe.process_traces(np.array([v]), np.zeros(1), i) for i, v in enumerate(f)]
    ema = [dff[0]]
    for x in dff[1:]:
        ema.append(0.25 * x + 0.75 * ema[-1])
    np.testing.assert_allclose([x.readout for x in r], ema, rtol=1e-6)


def test_dff_formula_with_neuropil() -> None:
    protocol = make_protocol(
        decoder='name = "single_neuron"\nroi = "r0"', f0='kind = "running_mean"\nwindow_frames = 1000',
        readout="neuropil_coefficient = 0.7\nneuropil_inner_px = 2.0\nneuropil_outer_px = 8.0",
    )
    pipe = Pipeline(protocol, roiset(["none"]), np.zeros((1, 64, 64), np.float32))
    pipe.process_traces(np.array([200.0]), np.array([100.0]), 0)  # Fc = 200 - 70 = 130
    r = pipe.process_traces(np.array([300.0]), np.array([100.0]), 1)  # Fc = 230, F0 = (130 + 230) / 2 = 180
    assert r.F0[0] == pytest.approx(180.0)
    assert r.dff[0] == pytest.approx(230 / 180 - 1)
    assert r.readout_raw == pytest.approx(230 / 180 - 1)


def test_unknown_group_is_a_clear_roi_error() -> None:
    protocol = make_protocol(decoder='name = "two_population"\nplus = "P+"\nminus = "Q-"')
    expected = r"readout.decoder.minus = 'Q-': no soma ROI of group 'Q-'.*groups in the ROI set: P\+, P-"
    with pytest.raises(RoiError, match=expected):
        Pipeline(protocol, roiset(["P+", "P-"]), np.zeros((1, 64, 64), np.float32))


def test_decoder_naming_missing_roi_is_a_clear_error() -> None:
    protocol = make_protocol(decoder='name = "single_neuron"\nroi = "cn7"')
    with pytest.raises(RoiError, match=r"names ROI 'cn7', which is not in the ROI set \(ROIs: r0, r1\)"):
        Pipeline(protocol, roiset(["none", "none"]), np.zeros((1, 64, 64), np.float32))
    protocol = make_protocol(decoder='name = "weighted"\nweights = { r0 = 1.0, zz = 2.0 }')
    with pytest.raises(RoiError, match=r"readout.decoder.weights.zz names ROI 'zz'"):
        Pipeline(protocol, roiset(["none"]), np.zeros((1, 64, 64), np.float32))


@pytest.mark.parametrize(
    ("decoder", "message"),
    [
        ('name = "twopop"', "readout.decoder.name = 'twopop': expected one of 'two_population'"),
        ('name = "ensemble"\nsign = 1', "readout.decoder.sign = 1: expected no such key"),
        ('name = "ensemble"\norder = "E1+E2"', "readout.decoder.order = 'E1+E2': expected one of 'E2-E1', 'E1-E2'"),
        ('name = "single_neuron"', "readout.decoder.roi = (missing)"),
        ('name = "weighted"\nweights = { a = "x" }', "readout.decoder.weights.a = 'x': expected a finite number"),
        ('name = "spike_rate"', "readout.signal = 'dff': expected 'spike_rate' for decoder 'spike_rate'"),
    ],
)
def test_bad_decoder_config_names_file_and_key(decoder: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_protocol(decoder=decoder)
    assert str(err.value).startswith("test.toml: " + message)
