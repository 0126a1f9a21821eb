"""Parallel replay gives exactly the readouts of frame-by-frame processing."""

from __future__ import annotations

import numpy as np

from bcirig.processing import Pipeline
from bcirig.processing.replay import replay
from bcirig.processing.synthetic import make_movie

from .conftest import make_protocol


def test_replay_on_two_threads_is_bit_identical_to_process() -> None:
    movie = make_movie(24, 96, 96, 4, max_shift=5.0, seed=2)
    protocol = make_protocol(height=96, width=96, registration="enabled = true\nmax_shift_px = 8",
                             readout="neuropil_coefficient = 0.7", smoothing='kind = "moving_mean"\nframes = 3')
    frames = list(movie.frames)
    frames[5] = frames[5][:, :10]  # a bad frame in the middle is skipped the same way
    one = Pipeline(protocol, movie.rois, movie.reference)
    expected = [one.process(f, i + 100) for i, f in enumerate(frames)]
    got = list(replay(Pipeline(protocol, movie.rois, movie.reference), frames, start_index=100, workers=2, ahead=4))
    assert [r.frame for r in got] == list(range(100, 124))
    assert [r.valid for r in got] == [i != 5 for i in range(24)]
    for a, b in zip(expected, got, strict=True):
        assert (a.readout_raw, a.readout, a.corr, a.error) == (b.readout_raw, b.readout, b.corr, b.error) or (
            np.isnan(a.corr) and np.isnan(b.corr)
        )
        np.testing.assert_array_equal(a.shift, b.shift)
        np.testing.assert_array_equal(a.dff, b.dff)
    # the synthetic movie's known motion is recovered
    est = np.array([r.shift for r in got if r.valid])
    truth = np.delete(movie.shifts, 5, axis=0)
    assert np.sqrt(np.mean((est - truth) ** 2)) < 0.2
