"""Per-stage CPU time of the pipeline on a synthetic movie, hot caches (developer tool).

    .venv/bin/python tools/profile_pipeline.py --size 512 --rois 500 [--cprofile]

Thread CPU time (not wall time), so the numbers mean something on a busy machine. For latency
against the targets use ``bcirig bench``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable

import numpy as np

from bcirig.bench.common import bench_protocol
from bcirig.bench.pipeline import prefill_f0
from bcirig.processing import Pipeline
from bcirig.processing.synthetic import make_movie


def cpu_ms(fn: Callable[[int], object], n: int) -> float:
    """Median thread CPU time of ``fn(i)`` over ``n`` calls, in ms."""
    ts = []
    for i in range(n):
        t = time.thread_time_ns()
        fn(i)
        ts.append(time.thread_time_ns() - t)
    return float(np.median(ts)) / 1e6


def main() -> None:
    """Print stage medians; optionally a cProfile of whole frames."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--rois", type=int, default=10)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--cprofile", action="store_true")
    a = p.parse_args()
    movie = make_movie(8, a.size, a.size, a.rois, seed=1)
    pipe = Pipeline(bench_protocol(a.size, a.size, 30.0), movie.rois, movie.reference)
    prefill_f0(pipe, movie)
    frames = movie.frames
    ex = pipe.extractor
    fc = np.full(a.rois, 1000.0)
    print(f"{a.size}x{a.size}, {a.rois} ROIs, medians of {a.frames} calls (ms of CPU)")
    print(f"  whole frame      {cpu_ms(lambda i: pipe.process(frames[i % 8], i), a.frames):.3f}")
    print(f"  registration     {cpu_ms(lambda i: pipe.register(frames[i % 8]), a.frames):.3f}")
    print(f"  load frame       {cpu_ms(lambda i: ex.load(frames[i % 8]), a.frames):.3f}")
    print(f"  extract          {cpu_ms(lambda i: ex.extract([(1.3, -2.6)] * len(ex.groups)), a.frames):.3f}")
    print(f"  F0 update        {cpu_ms(lambda i: pipe.f0.update(fc + np.sin(i)), a.frames):.3f}")
    if a.cprofile:
        prof = cProfile.Profile()
        prof.enable()
        for i in range(a.frames):
            pipe.process(frames[i % 8], i)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
