"""The benchmark's own machinery: its NumPy baseline does the same science, its report marks targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bcirig.bench import report
from bcirig.bench.common import bench_protocol
from bcirig.processing import Pipeline
from bcirig.processing.naive import NaivePipeline
from bcirig.processing.pipeline import Motion
from bcirig.processing.synthetic import make_movie


def test_numpy_baseline_computes_the_same_readout_given_the_same_shifts(monkeypatch: pytest.MonkeyPatch) -> None:
    shifts = np.array([(0, 0), (3, -2), (-4, 1), (2, 5), (0, -3), (-1, -1)] * 4, float)
    movie = make_movie(len(shifts), 128, 128, 6, shifts=shifts, seed=4)
    protocol = bench_protocol(128, 128, 30.0)
    pipe = Pipeline(protocol, movie.rois, movie.reference)
    naive = NaivePipeline(movie.rois, movie.reference, window=protocol.f0_window_frames)
    np.testing.assert_allclose([pipe.register(f)[1:3] for f in movie.frames], shifts, atol=0.15)
    # the baseline's plain phase correlation misregisters some of these frames (no taper, 10 photons
    # per pixel), and ours samples at its subpixel estimate: hand both the true shifts so that only
    # extraction, neuropil, F0, dF/F, decoder and smoothing are compared
    ours = [pipe.process(f, i, motion=Motion([(dy, dx)], dy, dx, 1.0)) for i, (f, (dy, dx)) in
            enumerate(zip(movie.frames, shifts, strict=True))]
    truth = iter(shifts)
    monkeypatch.setattr(naive, "shift", lambda plane: tuple(next(truth)))
    theirs = np.array([naive.process(f) for f in movie.frames])
    np.testing.assert_allclose([r.readout for r in ours], theirs, rtol=1e-3, atol=1e-5)
    assert np.abs(theirs).max() > 0.01  # the comparison is not between zeros


def test_report_marks_met_and_missed_targets() -> None:
    lat = {"median_ms": 1.5, "p99_ms": 4.0, "max_ms": 6.0, "cpu_median_ms": 1.2, "frames": 60, "late": 0,
           "stage_median_ms": {"register": 1.0, "extract": 0.3, "f0_dff_decode": 0.2}}
    results = {
        "latency": {"512x512@30Hz 10 ROIs": lat},
        "baseline": {"512x512@30Hz 10 ROIs": {"numpy_median_ms": 12.0, "bcirig_median_ms": 1.5, "speedup": 8.0}},
        "replay": {"sequential_fps": 900.0, "two_threads_fps": 1100.0},
        "registration": {"rms_px": 0.028, "max_abs_px": 0.08},
    }
    lines = report(results).splitlines()

    def line(start: str) -> str:
        return next(x for x in lines if x.startswith(start))

    assert line("512x512@30Hz 10 ROIs: median ms").endswith("ok")
    assert line("512x512@30Hz 10 ROIs: p99 ms").endswith("MISSED")  # 4.0 > 3.5
    assert line("512x512@30Hz 10 ROIs: speed-up").endswith("ok")
    assert line("replay 512x512 10 ROIs: frames/s, registration").endswith("MISSED")  # 1100 < 1200
    assert line("registration RMS").endswith("ok")


@pytest.mark.slow
def test_frames_sent_by_bcirig_send_each_get_a_readout_and_a_decision(tmp_path: Path) -> None:
    from bcirig.bench.live import chain

    r = chain(64, 64, 4, 100.0, 60, tmp_path)
    assert r["errors"] == [] and r["session_error"] == ""
    assert (r["readouts"], r["decided"], r["dropped_frames"]) == (60, 60, 0)
    assert "60 frames sent, 0 skipped" in r["sender"]
    # causal order on one clock: sent <= arrived <= readout published <= feedback sent
    assert 0 <= r["transfer"]["median_ms"] <= r["sent_to_readout"]["median_ms"] <= r["sent_to_feedback"]["median_ms"]


@pytest.mark.slow
def test_each_way_in_delivers_a_512x796_frame_identical(tmp_path: Path) -> None:
    from bcirig.bench.live import transfer

    for kind in ("socket", "zmq", "tcp", "cloose"):
        r = transfer(kind, n=12, rate_hz=200.0)
        assert r["received"] == 12 and r["identical"], (kind, r)
        assert r["median_ms"] > 0, kind
