"""Latency from the stage stamps every message carries: an interval's durations, and their statistics.

The one definition the session summary, the subject's report, the session figure and the benchmarks use.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def interval_ms(t_ns: np.ndarray, stamps: Sequence[str], start: str, end: str) -> np.ndarray:
    """``end - start`` (ms) of every row of a ``t_ns`` stamp table (columns named by ``stamps``) that
    carries both stamps; a stamp of 0 or less was never set."""
    if t_ns.size == 0:
        return np.zeros(0)
    a, b = t_ns[:, list(stamps).index(start)], t_ns[:, list(stamps).index(end)]
    ok = (a > 0) & (b > 0)
    return np.asarray((b[ok] - a[ok]) / 1e6, np.float64)


def stats_ms(ms: Sequence[float] | np.ndarray) -> dict[str, float]:
    """``n``, ``median_ms``, ``p99_ms`` (linear interpolation) and ``max_ms`` of durations in ms (NaN if none)."""
    a = np.asarray(ms, np.float64)
    if a.size == 0:
        return {"n": 0, "median_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    return {"n": int(a.size), "median_ms": float(np.median(a)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max())}
