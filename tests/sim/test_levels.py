"""Fidelity levels: frames through the real pipeline vs ROI traces through process_traces agree."""

from __future__ import annotations

import numpy as np

from bcirig.config import Protocol
from bcirig.processing.pipeline import Pipeline
from bcirig.sim import SimulatedMouse
from tests.sim.conftest import sim_config

FRAMES = 3000  # 100 s of grey-screen activity


def _run(protocol: Protocol, level: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    mouse = SimulatedMouse(protocol, sim_config(protocol, rule="none", level=level), seed=seed)
    pipe = Pipeline(protocol, mouse.rois(), mouse.reference_image())
    readout, f = [], []
    for i in range(FRAMES):
        if level == "pixels":
            r = pipe.process(mouse.step(None).data, i)
        else:
            t = mouse.step_traces(None)
            r = pipe.process_traces(t.F, t.neuropil, i)
        readout.append(r.readout)
        f.append(r.F)
    return np.array(readout[100:]), np.array(f[100:])  # skip the smoothing/F0 start


def _lag1(x: np.ndarray) -> float:
    x = x - x.mean()
    return float((x[1:] * x[:-1]).mean() / (x * x).mean())


def test_pixels_and_traces_give_matching_readouts(protocol: Protocol) -> None:
    px, f_px = _run(protocol, "pixels", seed=5)
    tr, f_tr = _run(protocol, "traces", seed=5)
    # Same seed: same spikes, same motion; only the noise draws and the pixel rounding differ.
    sd = tr.std()
    assert sd > 0.05  # a readout that moves
    assert abs(px.mean() - tr.mean()) < 0.1 * sd
    assert 0.95 < px.std() / sd < 1.05
    assert abs(_lag1(px) - _lag1(tr)) < 0.03
    # ROI fluorescence: same mean level (within 1 %) and the same frame-to-frame noise (within 10 %)
    assert np.allclose(f_px.mean(0), f_tr.mean(0), rtol=0.01)
    noise_px, noise_tr = np.diff(f_px, axis=0).std(0), np.diff(f_tr, axis=0).std(0)
    assert np.allclose(noise_px, noise_tr, rtol=0.1)


def test_levels_differ_only_statistically_across_seeds(protocol: Protocol) -> None:
    """Another animal-day (seed) gives another trace, with the same statistics."""
    a, _ = _run(protocol, "traces", seed=5)
    b, _ = _run(protocol, "traces", seed=6)
    assert not np.array_equal(a, b)
    assert 0.7 < a.std() / b.std() < 1.4
