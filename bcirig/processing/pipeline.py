"""The pipeline stage: one imaging frame -> one :class:`~bcirig.messages.Readout`.

Per frame (``protocol`` sections in brackets):

1. check shape, dtype and content; a bad frame returns ``Readout(valid=False, error=...)``, counts in
   ``bad_frames`` and leaves every state (F0 window, smoothing, decoder) untouched;
2. motion: rigid (or piecewise) subpixel shift of the BCI plane against the reference [registration];
   all planes are taken to move together;
3. extraction: ROI F = weighted mean of its pixels sampled at the shift; neuropil = mean of its annulus
   [readout.neuropil_inner_px / outer_px];
4. F0 on the neuropil-corrected trace [readout.f0], then, per ROI i::

       Fc_i  = F_i - c * neuropil_i                  (c = readout.neuropil_coefficient; float32)
       F0_i  = rule(Fc_i over the last f0_window_frames frames, this one included)
       dff_i = (Fc_i - F0_i) / F0_i

5. decoder [readout.decoder] -> ``readout_raw``; smoothing [readout.smoothing] -> ``readout``.

Deterministic: the same frames in the same order give bit-identical readouts (replay relies on it).
"""

from __future__ import annotations

import copy
import time
from typing import NamedTuple

import numpy as np

from bcirig.config import Protocol, RegistrationMode
from bcirig.messages import Readout
from bcirig.processing.decoders import make_decoder
from bcirig.processing.extraction import Extractor
from bcirig.processing.f0 import make_f0_rule
from bcirig.processing.registration import PiecewiseRegistration, RigidRegistration
from bcirig.processing.rois import RoiSet
from bcirig.processing.smoothing import Smoother
from bcirig.threads import pin_blas_threads


class Motion(NamedTuple):
    """Registration result of one frame: per-group shifts (for the ROIs) and the reported shift."""

    shifts: list[tuple[float, float]]
    dy: float
    dx: float
    corr: float


def make_reference(frames: np.ndarray) -> np.ndarray:
    """Mean image (planes, H, W) float32 of (T, planes, H, W) frames, e.g. a few hundred baseline frames."""
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[0] == 0:
        raise ValueError(f"make_reference needs frames shaped (T, planes, H, W) with T >= 1, got {arr.shape}")
    reference: np.ndarray = arr.mean(axis=0, dtype=np.float64).astype(np.float32)
    return reference


class Pipeline:
    """Motion correction, ROI extraction, F0, dF/F, decoder and smoothing for one session."""

    def __init__(self, protocol: Protocol, rois: RoiSet, reference: np.ndarray) -> None:
        pin_blas_threads()  # before any product: results must not depend on the thread count
        img = protocol.imaging
        self.protocol, self.rois = protocol, rois
        self.frame_shape = (img.planes, img.height, img.width)
        self.dtype = np.dtype(img.dtype)
        ref = np.asarray(reference, np.float32)
        if ref.shape != self.frame_shape:
            raise ValueError(f"reference shape {ref.shape} != frame shape {self.frame_shape} (planes, H, W)")
        if not np.isfinite(ref).all():
            raise ValueError("reference image contains NaN or infinite pixels; rebuild it with make_reference")
        rois.validate(self.frame_shape)
        self.decoder = make_decoder(protocol, rois)
        self.reference = ref
        reg = protocol.registration
        self._rigid: RigidRegistration | None = None
        self._piecewise: PiecewiseRegistration | None = None
        groups = None
        if reg.enabled and reg.mode == RegistrationMode.PIECEWISE:
            self._piecewise = PiecewiseRegistration(ref[img.bci_plane], reg)
            tile = np.array([self._piecewise.tile_of(*r.centroid_yx) for r in rois], int)
            groups = [np.flatnonzero(tile == t) for t in range(len(self._piecewise.tiles))]
        elif reg.enabled:
            self._rigid = RigidRegistration(ref[img.bci_plane], reg)
        margin = int(np.ceil(reg.max_shift_px)) if reg.enabled else 0
        ro = protocol.readout
        self.extractor = Extractor(rois, self.frame_shape, margin, ro.neuropil_inner_px, ro.neuropil_outer_px, groups)
        self.neuropil_coefficient = ro.neuropil_coefficient
        self.f0 = make_f0_rule(protocol, len(rois))
        self.smoother = Smoother(ro.smoothing)
        self.bad_frames = 0
        self.frames = 0  # valid frames processed
        self._fit_rows: list[np.ndarray] | None = [] if self.decoder.needs_fit else None
        self.fit_readouts: np.ndarray | None = None  # decoder output of the fitting frames, once fitted

    # ------------------------------------------------------------------ frames
    def check(self, frame: object, index: int) -> str:
        """Why ``frame`` cannot be processed ('' if it can)."""
        if not isinstance(frame, np.ndarray):
            return f"frame {index}: not an array ({type(frame).__name__})"
        if frame.shape != self.frame_shape:
            return f"frame {index}: shape {frame.shape} != expected {self.frame_shape}"
        if frame.dtype != self.dtype:
            return f"frame {index}: dtype {frame.dtype} != expected {self.dtype}"
        if frame.dtype.kind == "f" and not np.isfinite(frame).all():
            return f"frame {index}: contains NaN or infinite pixels"
        return ""

    def process(
        self, frame: np.ndarray, index: int, t_arrive_ns: int | None = None, *, motion: Motion | None = None
    ) -> Readout:
        """Readout of frame ``index``; never raises on bad input (``valid=False`` instead).

        ``motion``: this frame's :meth:`register` result if already computed (parallel replay).
        """
        t = {"arrive": time.monotonic_ns() if t_arrive_ns is None else int(t_arrive_ns)}
        error = self.check(frame, index)
        if error:
            return self._bad(index, error, t)
        if motion is None:
            motion = self.register(frame)
        t["registered"] = time.monotonic_ns()
        self.extractor.load(frame)
        f, npl = self.extractor.extract(motion.shifts)
        t["extracted"] = time.monotonic_ns()
        out = self._from_traces(f, npl, index, t)
        out.shift = np.array([motion.dy, motion.dx], np.float32)
        out.corr = motion.corr
        return out

    def register(self, frame: np.ndarray, registrar: object | None = None) -> Motion:
        """Motion of a valid frame. A pure function of the frame: safe to run ahead, in another thread,
        with its own ``registrar`` (from :meth:`new_registrar`; registrars hold scratch buffers)."""
        reg = registrar if registrar is not None else (self._rigid or self._piecewise)
        plane = frame[self.protocol.imaging.bci_plane]
        if isinstance(reg, RigidRegistration):
            dy, dx, corr = reg.register(plane)
            return Motion([(dy, dx)], dy, dx, corr)
        if isinstance(reg, PiecewiseRegistration):
            tiles = reg.register(plane)
            shifts = [(dy, dx) for dy, dx, _ in tiles]
            dy, dx = float(np.mean([s[0] for s in shifts])), float(np.mean([s[1] for s in shifts]))
            return Motion(shifts, dy, dx, float(np.mean([c for _, _, c in tiles])))
        return Motion([(0.0, 0.0)] * len(self.extractor.groups), 0.0, 0.0, float("nan"))

    def new_registrar(self) -> object | None:
        """An independent copy of the registration state, for :meth:`register` in another thread."""
        return copy.deepcopy(self._rigid or self._piecewise)

    def process_traces(self, F: np.ndarray, neuropil: np.ndarray, index: int) -> Readout:
        """The same computation from per-ROI F and neuropil onward (no registration, no extraction)."""
        t = {"arrive": time.monotonic_ns()}
        n = len(self.rois)
        for name, a in (("F", F), ("neuropil", neuropil)):
            arr = np.asarray(a)
            if arr.shape != (n,):
                return self._bad(index, f"frame {index}: {name} shape {arr.shape} != expected ({n},)", t)
            if not np.isfinite(arr).all():
                return self._bad(index, f"frame {index}: {name} contains NaN or infinite values", t)
        t["registered"] = t["extracted"] = time.monotonic_ns()
        return self._from_traces(np.asarray(F, np.float32), np.asarray(neuropil, np.float32), index, t)

    def _bad(self, index: int, error: str, t: dict[str, int]) -> Readout:
        """A rejected frame: counted, reported, NaN in every per-ROI field (so rows keep their width)."""
        self.bad_frames += 1
        nan = np.full(len(self.rois), np.nan, np.float32)
        return Readout(
            frame=index, valid=False, error=error, t_ns=t, shift=np.full(2, np.nan, np.float32),
            F=nan, neuropil=nan.copy(), F0=nan.copy(), dff=nan.copy(),
        )

    # ------------------------------------------------------------------ traces onward
    def _from_traces(self, f: np.ndarray, npl: np.ndarray, index: int, t: dict[str, int]) -> Readout:
        # Fc rounded to float32 once, so F0's float32 window and dF/F see the very same values
        fc = (f.astype(np.float64) - self.neuropil_coefficient * npl.astype(np.float64)).astype(np.float32)
        f0 = self.f0.update(fc)
        fc = fc.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            dff = (fc - f0) / f0  # F0 <= 0 (neuropil larger than the cell) gives inf/NaN, shown as such
        raw = self.decoder.decode(dff, fc)
        if self._fit_rows is not None:
            raw = self._collect_fit(dff, fc, raw)
        readout = self.smoother.update(raw)
        self.frames += 1
        t["decoded"] = time.monotonic_ns()
        return Readout(
            frame=index, t_ns=t, F=f, neuropil=npl, F0=f0.astype(np.float32), dff=dff.astype(np.float32),
            readout_raw=raw, readout=readout,
        )

    def _collect_fit(self, dff: np.ndarray, fc: np.ndarray, raw: float) -> float:
        """Gather baseline dF/F for a decoder that needs fitting; fit once enough frames exist."""
        assert self._fit_rows is not None
        if self.decoder.fitted:
            return raw
        self._fit_rows.append(dff.copy())
        needed = getattr(self.decoder, "fit_frames", 0)
        if len(self._fit_rows) >= needed:
            self.fit_decoder(np.array(self._fit_rows))
            return self.decoder.decode(dff, fc)
        return raw

    def fit_decoder(self, baseline_dff: np.ndarray) -> np.ndarray:
        """Fit the decoder on a (frames, n_rois) dF/F matrix; return its output for each of those frames.

        Called automatically after ``fit_frames`` valid frames; call it yourself to fit from another
        recording (e.g. yesterday's baseline). The returned outputs are kept as ``fit_readouts``.
        """
        x = np.asarray(baseline_dff, np.float64)
        self.decoder.fit(x)
        self._fit_rows = None
        zeros = np.zeros(x.shape[1])
        self.fit_readouts = np.array([self.decoder.decode(row, zeros) for row in x])
        return self.fit_readouts
