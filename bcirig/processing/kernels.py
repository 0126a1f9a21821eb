"""SciPy's private kernels, each checked once, at import, against the public function it stands in for.

Registration calls pocketfft's ``r2c``/``c2r`` and extraction calls sparsetools' ``csr_matvec`` directly:
the public ``scipy.fft.rfft2`` and ``csr_matrix @ x`` call the same kernels but add microseconds of
argument handling per call. Private functions may change meaning in any SciPy release, so each is used
only if it imports and gives, on a small input, exactly what the public function gives; otherwise the
public function is used (slower, the same numbers) and a warning says why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K")


def checked_kernel(name: str, load: Callable[[], K], agrees: Callable[[K], bool]) -> K | None:
    """``load()`` if it succeeds and ``agrees`` with the public function on it, else None with a warning."""
    try:
        kernel = load()
        if agrees(kernel):
            return kernel
        reason = "its result differs from the public function's"
    except Exception as e:  # an ImportError, or a changed signature raising anything at all
        reason = f"{type(e).__name__}: {e}"
    log.warning("SciPy's private %s is not used (%s); falling back to the public function", name, reason)
    return None
