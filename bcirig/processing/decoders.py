"""Decoders: per-ROI signals of one frame -> one number, the BCI readout (before smoothing).

A protocol names its decoder in ``[readout.decoder]``: ``name`` picks a registered class from
:data:`DECODERS`, the other keys are that class's parameters (a frozen dataclass validated with
:func:`bcirig.schema.build`, so a typo gets one clear :class:`~bcirig.schema.ConfigError`).

Group-based decoders (two_population, ensemble, pca, spike_rate) read only **soma** ROIs on the
**BCI plane** (``imaging.bci_plane``); dendrites are recorded but never drive the BCI. Decoders that
name ROIs (single_neuron, weighted) read exactly the ROIs named.

Fitting (pca): a decoder with ``needs_fit`` returns NaN until fitted. The pipeline fits it
automatically from the dF/F of the first ``fit_frames`` valid frames (default: the first half of the
baseline, ``baseline.frames // 2``), so replaying the same frames gives the same components, and the
second half of the baseline already carries projected readouts for the task's calibration (which
skips NaN). The decoder output for the fitting frames is kept as ``Pipeline.fit_readouts``.
``Pipeline.fit_decoder(matrix)`` fits from a given (frames, ROIs) dF/F matrix instead (e.g. yesterday's),
before the session starts, so that every readout is valid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import numpy as np

from bcirig.config import Protocol
from bcirig.decoder_params import (
    DECODER_SCHEMAS,
    EnsembleOrder,
    EnsembleParams,
    NoParams,
    PcaParams,
    ReadoutSignal,
    SingleNeuronParams,
    SpikeRateParams,
    TwoPopulationParams,
    WeightedParams,
    check_decoder_table,
    parse_decoder_table,
)
from bcirig.processing.rois import RoiError, RoiKind, RoiSet

DECODERS: dict[str, type[Decoder]] = {}


def register(name: str) -> Callable[[type[Decoder]], type[Decoder]]:
    """Class decorator: make a decoder selectable as ``[readout.decoder] name = "<name>"``."""

    def deco(cls: type[Decoder]) -> type[Decoder]:
        if name in DECODERS:
            raise ValueError(f"decoder {name!r} registered twice")
        schema = DECODER_SCHEMAS.get(name)
        if schema is None or schema.params is not cls.Params or schema.signal != cls.signal:
            raise ValueError(f"decoder {name!r}: its parameters and signal must be declared in "
                             "bcirig.decoder_params.DECODER_SCHEMAS (config validates protocols from there)")
        cls.NAME = name
        DECODERS[name] = cls
        return cls

    return deco




class Decoder:
    """Base class. Subclasses set ``Params`` and implement :meth:`decode`."""

    NAME: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    needs_fit: ClassVar[bool] = False
    signal: ClassVar[ReadoutSignal] = ReadoutSignal.DFF  # which readout.signal the decoder consumes

    def __init__(self, params: Any, rois: RoiSet, protocol: Protocol) -> None:
        self.params, self.rois, self.protocol = params, rois, protocol

    def decode(self, dff: np.ndarray, fc: np.ndarray) -> float:
        """Readout of one frame from dF/F (and neuropil-corrected F) of every ROI, in RoiSet order."""
        raise NotImplementedError

    def fit(self, baseline_dff: np.ndarray) -> None:
        """Fit from a (frames, n_rois) dF/F matrix; only decoders with ``needs_fit`` use it."""

    @property
    def fitted(self) -> bool:
        """True when the decoder can produce a readout."""
        return True

    @classmethod
    def group_signs(cls, params: Any) -> dict[str, float]:
        """The direction the readout rewards each ROI group this decoder names: +1 up, -1 down."""
        return {}

    # ---- helpers shared by the group-based decoders
    def _bci_somata(self, group: str, key: str) -> np.ndarray:
        """Indices of soma ROIs of ``group`` on the BCI plane; RoiError if there are none."""
        plane = self.protocol.imaging.bci_plane
        idx = self.rois.indices(group=group, kind=RoiKind.SOMA, plane=plane)
        if len(idx) == 0:
            known = sorted(set(self.rois.groups))
            raise RoiError(
                f"decoder {self.NAME!r}: readout.decoder.{key} = {group!r}: no soma ROI of group {group!r} "
                f"on the BCI plane {plane} (groups in the ROI set: {', '.join(known) or 'none'})"
            )
        return idx


def _mean(values: np.ndarray, idx: np.ndarray) -> float:
    return float(values[idx].sum() / len(idx))


# ------------------------------------------------------------------------------------ two populations


@register("two_population")
class TwoPopulation(Decoder):
    """mean(dF/F of P+) - mean(dF/F of P-)."""

    Params = TwoPopulationParams

    def __init__(self, params: TwoPopulationParams, rois: RoiSet, protocol: Protocol) -> None:
        super().__init__(params, rois, protocol)
        self.plus = self._bci_somata(params.plus, "plus")
        self.minus = self._bci_somata(params.minus, "minus") if params.minus else None

    @classmethod
    def group_signs(cls, params: TwoPopulationParams) -> dict[str, float]:
        """P+ up, P- down."""
        return {params.plus: 1.0, **({params.minus: -1.0} if params.minus else {})}

    def decode(self, dff: np.ndarray, fc: np.ndarray) -> float:
        """mean(P+) - mean(P-)."""
        value = _mean(dff, self.plus)
        return value - _mean(dff, self.minus) if self.minus is not None else value


# ------------------------------------------------------------------------------------------- ensemble


@register("ensemble")
class Ensemble(Decoder):
    """mean(E2) - mean(E1) (or the reverse); with ``e1_max`` the readout is capped at 0 while E1 is high."""

    Params = EnsembleParams

    def __init__(self, params: EnsembleParams, rois: RoiSet, protocol: Protocol) -> None:
        super().__init__(params, rois, protocol)
        self.e1 = self._bci_somata(params.e1, "e1")
        self.e2 = self._bci_somata(params.e2, "e2")
        self.sign = self.group_signs(params)[params.e2]

    @classmethod
    def group_signs(cls, params: EnsembleParams) -> dict[str, float]:
        """E2 up and E1 down for order E2-E1; the reverse for E1-E2."""
        up = 1.0 if params.order == EnsembleOrder.E2_MINUS_E1 else -1.0
        return {params.e2: up, params.e1: -up}

    def decode(self, dff: np.ndarray, fc: np.ndarray) -> float:
        """Signed ensemble difference, capped at 0 when the E1 constraint is violated."""
        e1 = _mean(dff, self.e1)
        value = self.sign * (_mean(dff, self.e2) - e1)
        if self.params.e1_max is not None and e1 > self.params.e1_max:
            value = min(value, 0.0)  # E1 too active: this frame cannot count toward a hit
        return value


# -------------------------------------------------------------------------------------- single neuron


@register("single_neuron")
class SingleNeuron(Decoder):
    """dF/F of one named ROI."""

    Params = SingleNeuronParams

    def __init__(self, params: SingleNeuronParams, rois: RoiSet, protocol: Protocol) -> None:
        super().__init__(params, rois, protocol)
        self.i = _named(rois, params.roi, self.NAME, "roi")

    def decode(self, dff: np.ndarray, fc: np.ndarray) -> float:
        """The conditioned neuron's dF/F."""
        return float(dff[self.i])


def _named(rois: RoiSet, name: str, decoder: str, key: str) -> int:
    try:
        return rois.index(name)
    except RoiError:
        raise RoiError(
            f"decoder {decoder!r}: readout.decoder.{key} names ROI {name!r}, which is not in the ROI set "
            f"(ROIs: {', '.join(rois.names[:20]) or 'none'}{' ...' if len(rois) > 20 else ''})"
        ) from None


# ------------------------------------------------------------------------------------------- weighted


@register("weighted")
class Weighted(Decoder):
    """sum_i weight_i * dF/F_i over the named ROIs."""

    Params = WeightedParams

    def __init__(self, params: WeightedParams, rois: RoiSet, protocol: Protocol) -> None:
        super().__init__(params, rois, protocol)
        self.idx = np.array([_named(rois, n, self.NAME, f"weights.{n}") for n in params.weights], np.intp)
        self.w = np.array([float(v) for v in params.weights.values()], np.float64)

    def decode(self, dff: np.ndarray, fc: np.ndarray) -> float:
        """Weighted sum."""
        return float(dff[self.idx] @ self.w)


# ------------------------------------------------------------------------------------------------ pca


@register("pca")
class Pca(Decoder):
    """(dF/F - baseline mean) . component; the component's sign makes its largest loading positive."""

    Params = PcaParams
    needs_fit = True

    def __init__(self, params: PcaParams, rois: RoiSet, protocol: Protocol) -> None:
        super().__init__(params, rois, protocol)
        if params.group:
            self.idx = self._bci_somata(params.group, "group")
        else:
            self.idx = rois.indices(kind=RoiKind.SOMA, plane=protocol.imaging.bci_plane)
            if len(self.idx) == 0:
                raise RoiError(f"decoder 'pca': no soma ROI on the BCI plane {protocol.imaging.bci_plane}")
        if params.component >= len(self.idx):
            raise RoiError(
                f"decoder 'pca': readout.decoder.component = {params.component} but only {len(self.idx)} ROIs"
            )
        self.fit_frames = params.fit_frames or max(2, protocol.baseline.frames // 2)
        self.mean: np.ndarray | None = None
        self.axis: np.ndarray | None = None

    @property
    def fitted(self) -> bool:
        """True once components exist."""
        return self.axis is not None

    def fit(self, baseline_dff: np.ndarray) -> None:
        """Principal components of the (frames, n_rois) baseline dF/F, restricted to this decoder's ROIs."""
        x = np.asarray(baseline_dff, np.float64)[:, self.idx]
        if len(x) < 2:
            raise ValueError(f"PCA needs at least 2 baseline frames, got {len(x)}")
        mean = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
        axis = vt[self.params.component]
        if axis[np.argmax(np.abs(axis))] < 0:
            axis = -axis  # SVD sign is arbitrary; fix it so replays and days agree
        self.mean, self.axis = mean, axis

    def decode(self, dff: np.ndarray, fc: np.ndarray) -> float:
        """Projection onto the component; NaN until fitted."""
        if self.axis is None or self.mean is None:
            return float("nan")
        return float((dff[self.idx] - self.mean) @ self.axis)


# ----------------------------------------------------------------------------------------- spike rate


@register("spike_rate")
class SpikeRate(Decoder):
    """Mean spike rate (Hz) of ``group`` somata, minus that of ``minus``; uses neuropil-corrected F.

    Per ROI: hp = F - mean(F over the last ``highpass_frames``); a spike is an upward crossing of
    ``threshold_sd`` x SD, SD = standard deviation of hp over the last ``sd_frames`` frames (robust to
    warm-up: no spike is counted before ``highpass_frames`` frames); rate = spikes in the last
    ``rate_frames`` frames / (``rate_frames`` / frame rate).
    """

    Params = SpikeRateParams
    signal = ReadoutSignal.SPIKE_RATE

    def __init__(self, params: SpikeRateParams, rois: RoiSet, protocol: Protocol) -> None:
        super().__init__(params, rois, protocol)
        self.plus = self._bci_somata(params.group, "group")
        self.minus = self._bci_somata(params.minus, "minus") if params.minus else None
        n = len(rois)
        self._f = np.zeros((params.highpass_frames, n))
        self._hp = np.zeros((params.sd_frames, n))
        self._spikes = np.zeros((params.rate_frames, n))
        self._above = np.zeros(n, bool)
        self._t = 0
        self.rate_hz = np.zeros(n)

    @classmethod
    def group_signs(cls, params: SpikeRateParams) -> dict[str, float]:
        """``group`` up, ``minus`` down."""
        return {params.group: 1.0, **({params.minus: -1.0} if params.minus else {})}

    def decode(self, dff: np.ndarray, fc: np.ndarray) -> float:
        """Update the per-ROI spike rates with this frame; return the group difference in Hz."""
        p, t = self.params, self._t
        self._f[t % p.highpass_frames] = fc
        n_f = min(t + 1, p.highpass_frames)
        hp = fc - self._f[:n_f].mean(axis=0)
        self._hp[t % p.sd_frames] = hp
        n_hp = min(t + 1, p.sd_frames)
        sd = self._hp[:n_hp].std(axis=0)
        above = (hp > p.threshold_sd * sd) & (sd > 0) & (t + 1 >= p.highpass_frames)
        spikes = above & ~self._above
        self._above = above
        self._spikes[t % p.rate_frames] = spikes
        window_s = p.rate_frames / self.protocol.imaging.frame_rate_hz
        self.rate_hz = self._spikes.sum(axis=0) / window_s
        self._t = t + 1
        value = _mean(self.rate_hz, self.plus)
        return value - _mean(self.rate_hz, self.minus) if self.minus is not None else value


# --------------------------------------------------------------------------------------- config check
def _parse(decoder_table: dict[str, Any], file: str) -> tuple[type[Decoder], Any]:
    name, params = parse_decoder_table(decoder_table, file)
    return DECODERS[name], params


def validate_decoder_config(decoder_table: dict[str, Any], protocol: Protocol, file: str) -> None:
    """Check ``[readout.decoder]`` (see :func:`bcirig.decoder_params.validate_decoder_config`)."""
    check_decoder_table(decoder_table, protocol.readout.signal, file)


def group_signs(decoder_table: dict[str, Any], groups: Iterable[str], file: str = "<protocol>") -> list[float]:
    """+1 / -1 per ROI group: the direction the protocol's decoder rewards it (P+ up, P- down; E2 - E1 ...),
    as the decoder itself says (:meth:`Decoder.group_signs`). A group the decoder does not name: a '+' or
    '-' at the end of its name, else the first group +1 and the others -1."""
    known: dict[str, float] = {}
    if decoder_table:
        cls, params = _parse(decoder_table, file)
        known = cls.group_signs(params)
    signs = []
    for i, g in enumerate(groups):
        if g in known:
            signs.append(known[g])
        elif g.endswith(("-", "\u2212")):
            signs.append(-1.0)
        elif g.endswith("+"):
            signs.append(1.0)
        else:
            signs.append(1.0 if i == 0 else -1.0)
    return signs


def make_decoder(protocol: Protocol, rois: RoiSet) -> Decoder:
    """Build the protocol's decoder for this ROI set; RoiError if it names ROIs or groups that are missing."""
    cls, params = _parse(protocol.readout.decoder, protocol.source_path or "<protocol>")
    return cls(params, rois, protocol)


__all__ = ["DECODERS", "Decoder", "group_signs", "make_decoder", "register", "validate_decoder_config"]
