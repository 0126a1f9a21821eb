"""SciPy's private kernels: checked against the public functions at import, with a public fallback.

Both paths give the same registration and the same F and neuropil; a kernel that fails to import or
disagrees is refused with a warning naming it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from bcirig.config import Registration
from bcirig.processing import Roi, RoiSet, extraction, registration
from bcirig.processing.extraction import Extractor
from bcirig.processing.kernels import checked_kernel
from bcirig.processing.registration import RigidRegistration

from .conftest import fourier_shift, smooth_image


def test_this_scipys_private_kernels_pass_their_check() -> None:
    # the SciPy installed here: both private kernels are in use (else the fast path is silently gone)
    assert registration._POCKETFFT is not None
    assert extraction._CSR_MATVEC is not None


def test_a_kernel_that_does_not_import_falls_back_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    def load() -> Callable[[], None]:
        raise ImportError("No module named 'scipy.fft._pocketfft.pypocketfft'")

    with caplog.at_level("WARNING", logger="bcirig.processing.kernels"):
        assert checked_kernel("pocketfft r2c/c2r", load, lambda k: True) is None
    assert caplog.messages == [
        "SciPy's private pocketfft r2c/c2r is not used (ImportError: No module named "
        "'scipy.fft._pocketfft.pypocketfft'); falling back to the public function"
    ]


def test_a_kernel_whose_meaning_changed_falls_back_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    # a csr_matvec that overwrites y instead of adding to it (or any other change) no longer agrees
    def overwriting(n_row: int, n_col: int, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
                    x: np.ndarray, y: np.ndarray) -> None:
        y[:] = x[:n_row]

    with caplog.at_level("WARNING", logger="bcirig.processing.kernels"):
        got = checked_kernel("sparsetools csr_matvec", lambda: overwriting, extraction._csr_matvec_agrees)
    assert got is None
    assert caplog.messages == ["SciPy's private sparsetools csr_matvec is not used (its result differs from the "
                               "public function's); falling back to the public function"]
    # and a kernel whose signature changed (it raises on the call) is refused the same way
    assert checked_kernel("pocketfft r2c/c2r", lambda: (abs, abs), registration._pocketfft_agrees) is None


def test_registration_is_the_same_with_the_public_fft() -> None:
    rng = np.random.default_rng(21)
    base = (100 + 900 * smooth_image(96, rng, sigma=2.0)).astype(np.float32)
    cfg = Registration(upsample=20, max_shift_px=15)
    private, public = RigidRegistration(base, cfg), RigidRegistration(base, cfg, private_kernels=False)
    for dy, dx in [(3.3, -7.6), (-11.2, 0.4), (0.0, 0.0)]:
        frame = rng.poisson(np.clip(fourier_shift(base, dy, dx), 0, None)).astype(np.uint16)
        a, b = private.register(frame), public.register(frame)
        assert a == pytest.approx(b, abs=1e-6)
        assert a[:2] == pytest.approx((dy, dx), abs=0.2)  # and both are right, not merely alike


def test_extraction_is_the_same_with_the_public_product() -> None:
    rng = np.random.default_rng(22)
    rois = RoiSet([Roi.disk("a", 0, (20, 20), 4), Roi.disk("b", 0, (40, 44), 5), Roi.disk("c", 0, (30, 12), 3)])
    frame = rng.uniform(50, 2000, (1, 64, 64)).astype(np.float32)
    private = Extractor(rois, (1, 64, 64), 8, 2.0, 8.0)
    public = Extractor(rois, (1, 64, 64), 8, 2.0, 8.0, private_kernels=False)
    by_hand = np.array([frame[0, r.y, r.x].mean() for r in rois], np.float64)
    for ex in (private, public):
        ex.load(frame)
    for shift in [(0.0, 0.0), (1.25, -2.5)]:
        (f_a, np_a), (f_b, np_b) = private.extract([shift]), public.extract([shift])
        np.testing.assert_allclose(f_a, f_b, rtol=1e-6)
        np.testing.assert_allclose(np_a, np_b, rtol=1e-6)
    f0, _ = public.extract([(0.0, 0.0)])
    np.testing.assert_allclose(f0, by_hand, rtol=1e-5)  # unmoved, F is the plain mean of the ROI's pixels
