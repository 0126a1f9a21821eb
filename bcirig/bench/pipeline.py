"""In-process benchmarks of the processing pipeline on synthetic movies with known motion.

``latency`` (paced at the imaging rate), ``baseline`` (against plain NumPy, alternating frame by frame),
``replay`` (offline throughput) and ``registration`` (RMS error against known shifts); see
:mod:`bcirig.bench`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bcirig.bench.common import bench_protocol
from bcirig.processing import Pipeline
from bcirig.processing.naive import NaivePipeline
from bcirig.processing.replay import replay
from bcirig.processing.synthetic import Movie, make_movie
from bcirig.recording.latency import stats_ms

CASES = [  # name, height, width, rois, rate_hz
    ("512x512@30Hz 10 ROIs", 512, 512, 10, 30.0),
    ("512x512@30Hz 500 ROIs", 512, 512, 500, 30.0),
    ("128x128@1kHz 10 ROIs", 128, 128, 10, 1000.0),
]


def prefill_f0(pipe: Pipeline, movie: Movie) -> None:
    """Fill the F0 window with plausible values so the percentile runs at steady-state cost."""
    rng = np.random.default_rng(0)
    r = pipe.process(movie.frames[0], 0)
    level = np.asarray(r.F, np.float64) - pipe.neuropil_coefficient * np.asarray(r.neuropil, np.float64)
    for _ in range(pipe.f0.window):
        pipe.f0.update(level * (1 + 0.05 * rng.standard_normal(len(level))))


def paced_latency(pipe: Pipeline, movie: Movie, n: int, rate_hz: float) -> dict[str, Any]:
    """Frames handed over at ``rate_hz``; latency from each frame's scheduled arrival to its readout."""
    period = int(1e9 / rate_hz)
    lat, cpu, stages, late = [], [], [], 0
    k = len(movie.frames)
    start = time.monotonic_ns() + period
    for i in range(n):
        due = start + i * period
        wait = due - time.monotonic_ns()
        if wait > 0:
            time.sleep(wait / 1e9)
        c0 = time.thread_time_ns()
        r = pipe.process(movie.frames[i % k], i + 1, due)
        done = time.monotonic_ns()
        cpu.append(time.thread_time_ns() - c0)
        lat.append(done - due)
        late += done > due + period
        t = r.t_ns
        stages.append((t["registered"] - t["arrive"], t["extracted"] - t["registered"], t["decoded"] - t["extracted"]))
    s = np.median(np.array(stages), axis=0) / 1e6
    return {
        **stats_ms(np.asarray(lat, np.float64) / 1e6), "frames": n, "late": int(late),
        "cpu_median_ms": float(np.median(cpu)) / 1e6,
        "stage_median_ms": {"register": float(s[0]), "extract": float(s[1]), "f0_dff_decode": float(s[2])},
    }


def versus_numpy(pipe: Pipeline, movie: Movie, n: int) -> dict[str, float]:
    """Median per-frame time of bcirig and of the plain NumPy pipeline, alternating frame by frame."""
    p = pipe.protocol
    naive = NaivePipeline(
        pipe.rois, pipe.reference, window=p.f0_window_frames, percentile=p.readout.f0.percentile,
        coefficient=p.readout.neuropil_coefficient, inner=p.readout.neuropil_inner_px,
        outer=p.readout.neuropil_outer_px, smooth=p.readout.smoothing.frames,
    )
    rng = np.random.default_rng(1)
    for _ in range(p.f0_window_frames):  # same steady state as bcirig's prefilled F0
        naive.window.append(np.abs(rng.normal(1000, 50, len(pipe.rois))).astype(np.float32))
    ours, theirs = [], []
    k = len(movie.frames)
    for i in range(n):
        frame = movie.frames[i % k]
        t0 = time.perf_counter_ns()
        pipe.process(frame, i)
        t1 = time.perf_counter_ns()
        naive.process(frame)
        t2 = time.perf_counter_ns()
        ours.append(t1 - t0)
        theirs.append(t2 - t1)
    a, b = float(np.median(ours)) / 1e6, float(np.median(theirs)) / 1e6
    return {"bcirig_median_ms": a, "numpy_median_ms": b, "speedup": b / a, "frames": n}


def replay_throughput(movie: Movie, n: int) -> dict[str, float]:
    """Offline frames/s, 512x512 10 ROIs: sequential, and with registration on a second thread."""
    out: dict[str, float] = {}
    frames = [movie.frames[i % len(movie.frames)] for i in range(n)]
    for label, workers in (("sequential_fps", 0), ("two_threads_fps", 1)):
        pipe = Pipeline(bench_protocol(512, 512, 30.0), movie.rois, movie.reference)
        t0 = time.perf_counter()
        if workers:
            for _ in replay(pipe, frames, workers=workers):
                pass
        else:
            for i, f in enumerate(frames):
                pipe.process(f, i)
        out[label] = n / (time.perf_counter() - t0)
    out["frames"] = n
    return out


def registration_accuracy(n: int) -> dict[str, float]:
    """RMS error (px) against known shifts up to +-20 px, 512x512, ~10 background photons per pixel."""
    movie = make_movie(n, 512, 512, 10, max_shift=20.0, seed=7)
    pipe = Pipeline(bench_protocol(512, 512, 30.0), movie.rois, movie.reference)
    est = np.array([pipe.process(f, i).shift for i, f in enumerate(movie.frames)], np.float64)
    err = est - movie.shifts
    return {
        "rms_px": float(np.sqrt(np.mean(err**2))),  # per axis
        "rms_euclidean_px": float(np.sqrt(np.mean(np.sum(err**2, axis=1)))),
        "max_abs_px": float(np.abs(err).max()),
        "frames": n,
    }
