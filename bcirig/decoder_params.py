"""Every decoder's parameters, declared once, without the decoders: what a protocol's ``[readout.decoder]``
table may say, validated by :mod:`bcirig.config` before anything runs.

The decoders themselves (the numerics) are stages in :mod:`bcirig.processing.decoders`; each one's
``Params`` is the dataclass declared here, and registering a decoder checks that it matches, so the two
never drift apart. Keeping the schemas here lets ``config`` validate a protocol without importing a
stage package (an import-layer contract in pyproject.toml).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from bcirig.schema import ConfigError, build, spec


class ReadoutSignal(enum.StrEnum):
    """What a decoder consumes per ROI (``readout.signal``): dF/F, or a voltage trace's spike rate."""

    DFF = "dff"
    SPIKE_RATE = "spike_rate"


class EnsembleOrder(enum.StrEnum):
    """Which ensemble's mean is subtracted from which (the readout's sign)."""

    E2_MINUS_E1 = "E2-E1"
    E1_MINUS_E2 = "E1-E2"


@dataclass(frozen=True)
class NoParams:
    """A decoder without parameters."""


@dataclass(frozen=True)
class TwoPopulationParams:
    """mean dF/F of group ``plus`` minus mean dF/F of group ``minus`` (Francioni 2026)."""

    plus: str = spec("P+", doc="group that must increase")
    minus: str = spec("P-", doc="group that must decrease; '' = one-population readout")


@dataclass(frozen=True)
class EnsembleParams:
    """Ensemble difference (Clancy 2014, Vendrell-Llopis 2022, HoloBMI)."""

    e1: str = spec("E1")
    e2: str = spec("E2")
    order: EnsembleOrder = spec(EnsembleOrder.E2_MINUS_E1)
    e1_max: float | None = spec(None, doc="HoloBMI E1 constraint: mean E1 dF/F above this caps the readout at 0")


@dataclass(frozen=True)
class SingleNeuronParams:
    """The conditioned neuron (Daie / Svoboda BCI)."""

    roi: str = spec(doc="name of the conditioned neuron's ROI")


@dataclass(frozen=True)
class WeightedParams:
    """A linear readout with one weight per named ROI."""

    weights: dict[str, Any] = spec(doc="ROI name -> weight")


@dataclass(frozen=True)
class PcaParams:
    """Projection of the population onto a principal component of the baseline (CLOOSE dynamics mode)."""

    group: str = spec("", doc="group of somata used; '' = every soma on the BCI plane")
    component: int = spec(0, min=0, max=100, doc="0 = first principal component")
    fit_frames: int = spec(0, min=0, doc="fit after this many valid frames; 0 = baseline.frames // 2")


@dataclass(frozen=True)
class SpikeRateParams:
    """Voltage imaging: high-pass filter, threshold at N standard deviations, count spikes."""

    group: str = spec("P+", doc="somata whose summed spike rate is the readout")
    minus: str = spec("", doc="optional group whose spike rate is subtracted")
    threshold_sd: float = spec(3.0, min=0.5, max=50.0)
    highpass_frames: int = spec(10, min=2, max=100000, doc="high-pass = F minus its moving mean over this many frames")
    rate_frames: int = spec(100, min=1, max=100000, doc="spikes are counted over this many frames")
    sd_frames: int = spec(1000, min=10, max=1000000, doc="noise SD estimated over this many frames")


class DecoderSchema(NamedTuple):
    """A decoder's parameter dataclass and the readout.signal it consumes."""

    params: type
    signal: ReadoutSignal


DECODER_SCHEMAS: dict[str, DecoderSchema] = {
    "two_population": DecoderSchema(TwoPopulationParams, ReadoutSignal.DFF),
    "ensemble": DecoderSchema(EnsembleParams, ReadoutSignal.DFF),
    "single_neuron": DecoderSchema(SingleNeuronParams, ReadoutSignal.DFF),
    "weighted": DecoderSchema(WeightedParams, ReadoutSignal.DFF),
    "pca": DecoderSchema(PcaParams, ReadoutSignal.DFF),
    "spike_rate": DecoderSchema(SpikeRateParams, ReadoutSignal.SPIKE_RATE),
}


def parse_decoder_table(decoder_table: dict[str, Any], file: str) -> tuple[str, Any]:
    """(name, validated parameters) of a ``[readout.decoder]`` table; ConfigError naming the key."""
    name = decoder_table.get("name")
    schema = DECODER_SCHEMAS.get(name) if isinstance(name, str) else None
    if schema is None:
        raise ConfigError(file, "readout.decoder.name", name, "one of " + ", ".join(repr(n) for n in DECODER_SCHEMAS))
    params = {k: v for k, v in decoder_table.items() if k != "name"}
    assert isinstance(name, str)
    return name, build(schema.params, params, file, "readout.decoder")


def check_decoder_table(decoder_table: dict[str, Any], signal: ReadoutSignal, file: str) -> None:
    """Check ``[readout.decoder]``: known name, known parameters of the right type and range, and that
    the protocol's ``readout.signal`` is the one the decoder consumes."""
    name, params = parse_decoder_table(decoder_table, file)
    if isinstance(params, WeightedParams):
        if not params.weights:
            raise ConfigError(file, "readout.decoder.weights", {}, "at least one ROI name = weight")
        for roi, weight in params.weights.items():
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
                raise ConfigError(file, f"readout.decoder.weights.{roi}", weight, "a finite number")
    expected = DECODER_SCHEMAS[name].signal
    if signal != expected:
        raise ConfigError(file, "readout.signal", signal,
                          f"'{expected}' for decoder {name!r} (spike_rate signal goes with the spike_rate decoder)")
