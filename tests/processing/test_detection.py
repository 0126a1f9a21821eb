"""Automatic soma detection: summary images, candidates scored against the simulated mouse, groups.

The simulated field's *somata* are every soma footprint the simulator renders on the BCI plane: the
8 BCI neurons and the other imaged neurons of the network (``simulation.imaged_neurons``), each with
its own calcium activity; any of them could be chosen for a BCI, so all of them count for recall.
Their true ROI is the disk the simulator itself uses for the BCI neurons (``SimulatedMouse.rois``:
radius = soma radius - 0.5 px). Not counted: the background's dim cells, static texture that is
never imaged as an ROI (``sim/footprints.py: background``); detecting one is a false positive.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bcirig.config import Protocol, parse_protocol
from bcirig.processing.detection import (
    Candidate,
    SummaryImages,
    choose_groups,
    detect_candidates,
    local_correlation_image,
    match_rois,
)
from bcirig.processing.registration import RigidRegistration
from bcirig.processing.rois import Roi, RoiError
from bcirig.sim import SimulatedMouse
from bcirig.sim.footprints import soma_radius
from tests.sim.conftest import short_protocol, sim_config

ROOT = Path(__file__).resolve().parents[2]
RECALL_TARGET, PRECISION_TARGET = 0.9, 0.8


# ============================================================================================ summary images
def brute_force_correlation(frames: np.ndarray, regress: bool) -> np.ndarray:
    """Mean Pearson correlation with the 8 neighbours, pixel by pixel (np.corrcoef)."""
    t, h, w = frames.shape
    x = frames.reshape(t, -1).astype(np.float64)
    x = x - x.mean(0)
    if regress:
        g = x.mean(1)
        x = x - np.outer(g, (g @ x) / (g @ g))
    out = np.zeros((h, w))
    for y in range(h):
        for c in range(w):
            rs = [np.corrcoef(x[:, y * w + c], x[:, yy * w + cc])[0, 1]
                  for yy in range(y - 1, y + 2) for cc in range(c - 1, c + 2)
                  if (yy, cc) != (y, c) and 0 <= yy < h and 0 <= cc < w]
            out[y, c] = np.mean(rs)
    return out


@pytest.mark.parametrize("regress", [False, True])
def test_local_correlation_matches_pixel_by_pixel_pearson(regress: bool) -> None:
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((60, 8, 11))
    shared = rng.standard_normal((60, 1, 1)) * 0.7  # a global fluctuation
    frames = 500 + 20 * (noise + np.roll(noise, 1, axis=2) + shared)  # neighbours along x share noise
    got = local_correlation_image(frames, regress_global=regress, chunk_frames=7)
    np.testing.assert_allclose(got, brute_force_correlation(frames, regress), atol=1e-9)


def test_summary_images_accumulate_frames_in_any_chunks() -> None:
    rng = np.random.default_rng(1)
    frames = rng.poisson(300, (45, 12, 10)).astype(np.uint16)
    a = SummaryImages(12, 10)
    for f in frames:
        a.add(f)
    b = SummaryImages(12, 10)
    b.add(frames[:20])
    b.add(frames[20:])
    np.testing.assert_allclose(a.mean_image(), frames.mean(0), rtol=1e-12)
    np.testing.assert_allclose(a.correlation_image(), b.correlation_image(), atol=1e-12)
    np.testing.assert_allclose(a.correlation_image(), local_correlation_image(frames), atol=1e-12)
    with pytest.raises(ValueError, match=r"\(T, 12, 10\)"):
        a.add(np.zeros((3, 10, 12)))
    with pytest.raises(ValueError, match="at least 2 frames"):
        SummaryImages(4, 4).correlation_image()


def test_blank_images_give_no_candidates() -> None:
    flat = np.full((40, 40), 100.0)
    assert detect_candidates(flat, np.zeros((40, 40)), cell_radius_px=3) == []


# ============================================================================================ simulated field
@dataclass
class Field:
    """Summary images of a simulated recording and the truth behind them."""

    mean: np.ndarray
    corr: np.ndarray
    truth: list[Roi]  # every soma of the BCI plane, as the simulator's disk ROI
    bci: list[int]  # which of them are BCI neurons
    active: np.ndarray  # bool per soma: its dF/F reached 0.1 during the recording (about one spike)
    radius: float
    plane: int
    frames: int
    seconds: float  # rendering excluded: registration + summary images


def simulate_field(protocol: Protocol, seed: int, frames: int) -> Field:
    """Render ``frames`` frames of a simulated mouse at rest, register them, accumulate summary images."""
    mouse = SimulatedMouse(protocol, sim_config(protocol, level="pixels"), seed=seed)
    im = protocol.imaging
    plane = im.bci_plane
    somata = [k for k, s in enumerate(mouse.sources) if s.kind == "soma" and s.plane == plane]
    truth = [Roi.disk(f"soma{k}", plane, (mouse.sources[k].cy, mouse.sources[k].cx),
                      max(1.0, mouse.sources[k].radius - 0.5)) for k in somata]
    bci = [i for i, k in enumerate(somata) if mouse.sources[k].name]
    # the truth is the simulator's own ROI for the BCI somata
    own = {r.name: r for r in mouse.rois()}
    for i in bci:
        r = own[mouse.sources[somata[i]].name]
        assert np.array_equal(r.y, truth[i].y) and np.array_equal(r.x, truth[i].x)
    reg = RigidRegistration(mouse.reference_image()[plane], protocol.registration)
    acc = SummaryImages(im.height, im.width)
    peak = np.zeros(len(somata))
    chunk: list[np.ndarray] = []
    seconds = 0.0
    for t in range(frames):
        frame = mouse.step(None)
        peak = np.maximum(peak, frame.truth["dff"][somata])
        t0 = time.perf_counter()
        img = frame.data[plane]
        dy, dx, _ = reg.register(img)
        chunk.append(np.roll(img, (-round(dy), -round(dx)), axis=(0, 1)))  # the simulator moves by whole px
        if len(chunk) == 32 or t == frames - 1:
            acc.add(np.stack(chunk))
            chunk = []
        seconds += time.perf_counter() - t0
    t0 = time.perf_counter()
    mean, corr = acc.mean_image(), acc.correlation_image()
    seconds += time.perf_counter() - t0
    return Field(mean, corr, truth, bci, peak >= 0.1, soma_radius(mouse.config, im.height, im.width), plane,
                 frames, seconds)


def score_field(field: Field, label: str, min_mean_z: float = 6.0) -> tuple[float, float]:
    """Detect, score against the true somata at IoU >= 0.5, print the figures; (recall, precision)."""
    t0 = time.perf_counter()
    cands = detect_candidates(field.mean, field.corr, cell_radius_px=field.radius, plane=field.plane,
                              min_mean_z=min_mean_z)
    seconds = time.perf_counter() - t0
    recall, precision, pairs = match_rois(cands, field.truth, iou=0.5)
    found = {j for _, j, _ in pairs}
    bci = sum(j in found for j in field.bci)
    active = np.flatnonzero(field.active)
    active_recall = sum(j in found for j in active) / max(1, len(active))
    ious = [v for _, _, v in pairs]
    h, w = field.mean.shape
    print(
        f"\n[detection] {label} field {h}x{w} (soma radius {field.radius:g} px, {field.frames} frames): "
        f"{len(field.truth)} somata ({len(field.bci)} BCI, {len(active)} active), {len(cands)} candidates; "
        f"recall {recall:.3f} (BCI {bci}/{len(field.bci)}, active somata {active_recall:.3f}), "
        f"precision {precision:.3f} at IoU >= 0.5 (median IoU {np.median(ious):.2f}); "
        f"registration + summary images {field.seconds:.2f} s, detection {seconds:.2f} s"
    )
    assert bci == len(field.bci), "every BCI soma must be found"
    assert [c.rank for c in cands] == list(range(len(cands)))
    assert all(a.score >= b.score for a, b in itertools.pairwise(cands))
    assert all(c.roi.plane == field.plane and c.roi.name == f"c{c.rank}" for c in cands)
    return recall, precision


def test_detection_on_the_short_simulated_field() -> None:
    """128 x 128 px, somata of radius 3 px. Few bright clutter peaks here, so the mean-image threshold is
    lowered to list the quiet somata too (at the default 6 the quiet ones are missed: recall ~0.85)."""
    field = simulate_field(short_protocol(), seed=1, frames=600)
    recall, precision = score_field(field, "short", min_mean_z=4.0)
    assert recall >= RECALL_TARGET
    assert precision >= PRECISION_TARGET


def test_detection_on_the_default_simulated_field() -> None:
    """The default protocol's field (francioni2026.toml: 512 x 796 px, somata of radius 8 px), default
    detection settings."""
    protocol = parse_protocol((ROOT / "protocols" / "francioni2026.toml").read_text(), "francioni2026.toml")
    field = simulate_field(protocol, seed=1, frames=600)
    recall, precision = score_field(field, "default")
    assert recall >= RECALL_TARGET
    assert precision >= PRECISION_TARGET
    again = detect_candidates(field.mean, field.corr, cell_radius_px=field.radius, plane=field.plane)
    first = detect_candidates(field.mean, field.corr, cell_radius_px=field.radius, plane=field.plane)
    assert [c.roi.y.tolist() for c in again] == [c.roi.y.tolist() for c in first]  # deterministic
    picked = choose_groups(first, {"P+": [0, 2, 4, 6], "P-": [1, 3, 5, 7]}, plane=field.plane)
    picked.validate((protocol.imaging.planes, protocol.imaging.height, protocol.imaging.width))


# ============================================================================================ groups
def candidates(n: int) -> list[Candidate]:
    return [Candidate(rank=i, roi=Roi.disk(f"c{i}", 0, (10.0 + 10 * i, 20.0), 3.0), score=float(n - i),
                      z_corr=float(n - i), z_mean=1.0) for i in range(n)]


def test_choose_groups_names_the_chosen_candidates_by_group() -> None:
    cands = candidates(8)
    rois = choose_groups(cands, {"P+": [0, 3, 5, 7], "P-": [1, 2, 4, 6]}, plane=1)
    assert rois.names == ["P+0", "P+1", "P+2", "P+3", "P-0", "P-1", "P-2", "P-3"]
    assert rois.groups == ["P+"] * 4 + ["P-"] * 4
    assert all(r.plane == 1 and r.kind == "soma" for r in rois)
    assert np.array_equal(rois[1].y, cands[3].roi.y) and np.array_equal(rois[4].x, cands[1].roi.x)
    assert list(rois.indices(group="P-")) == [4, 5, 6, 7]


@pytest.mark.parametrize(
    ("groups", "match"),
    [
        ({"P+": [0, 8]}, r"group 'P\+': candidate index 8 is out of range \(there are 8 candidates, 0..7\)"),
        ({"P+": [-1]}, r"candidate index -1 is out of range"),
        ({"P+": [0, 3], "P-": [3]}, r"candidate 3 is chosen twice: in group 'P\+' and in group 'P-'"),
        ({"P+": [2, 2]}, r"candidate 2 is chosen twice"),
        ({"P+": [1.0]}, r"candidate index 1.0 is not a whole number"),
        ({"": [1]}, r"non-empty name"),
    ],
)
def test_choose_groups_errors(groups: dict[str, Any], match: str) -> None:
    with pytest.raises(RoiError, match=match):
        choose_groups(candidates(8), groups, plane=0)


# ============================================================================================ scoring
def test_match_rois_is_one_to_one_by_iou() -> None:
    truth = [Roi.disk("a", 0, (10, 10), 3), Roi.disk("b", 0, (30, 30), 3), Roi.disk("c", 1, (50, 50), 3)]
    detected = [
        Roi.disk("x", 0, (10, 10.5), 3),  # a, high IoU
        Roi.disk("y", 0, (10, 11), 3),  # also a: only one may count
        Roi.disk("z", 0, (30, 34), 3),  # b, but too far off
        Roi.disk("w", 0, (50, 50), 3),  # c's pixels on the wrong plane
    ]
    recall, precision, pairs = match_rois(detected, truth)
    assert [(i, j) for i, j, _ in pairs] == [(0, 0)]
    assert (recall, precision) == (1 / 3, 1 / 4)
    recall, precision, pairs = match_rois(truth, truth)
    assert (recall, precision) == (1.0, 1.0) and all(v == 1.0 for _, _, v in pairs)
    assert match_rois([], truth)[:2] == (0.0, 1.0)
