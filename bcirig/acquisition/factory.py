"""Choose the frame source the rig file names (``[source] kind``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bcirig.acquisition.base import FrameSource, SourceError
from bcirig.config import Protocol, Rig, SourceKind


def _rig_dir(rig: Rig) -> Path | None:
    return Path(rig.source_path).resolve().parent if rig.source_path and Path(rig.source_path).is_file() else None


def _simulated(protocol: Protocol, rig: Rig, day: int, skip: int) -> Any:
    from bcirig.acquisition.simulated import SimulatedSource

    return SimulatedSource(protocol, rig, day=day, skip=skip)


def _network(protocol: Protocol, rig: Rig, day: int, skip: int) -> Any:
    from bcirig.acquisition.network import NetworkSource

    return NetworkSource(rig.source.network, _rig_dir(rig))


def _cloose(protocol: Protocol, rig: Rig, day: int, skip: int) -> Any:
    from bcirig.acquisition.cloose import ClooseSource

    return ClooseSource(rig.source.cloose, protocol.imaging)


def _tiff(protocol: Protocol, rig: Rig, day: int, skip: int) -> Any:
    from bcirig.acquisition.tiff_tail import TiffTailSource

    return TiffTailSource(rig.source.tiff, protocol.imaging, _rig_dir(rig))


def _custom(protocol: Protocol, rig: Rig, day: int, skip: int) -> Any:
    path = rig.source.custom.class_path
    module, _, name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise SourceError(f"{rig.source_path}: source.custom.class_path = {path!r}: cannot import it ({exc})") from None
    return cls(protocol, rig, dict(rig.source.custom.options))


def make_source(protocol: Protocol, rig: Rig, *, day: int = 1, skip: int = 0) -> FrameSource:
    """The rig's frame source, not yet opened (call ``open()``).

    ``day`` (the subject's training day) and ``skip`` (frames the set-up phase already took) matter to
    the simulated microscope only: a real one moves on by itself.
    """
    kind = rig.source.kind
    build = _SOURCES.get(kind)
    if build is None:
        raise SourceError(f"{rig.source_path}: source.kind = '{kind}' has no implementation")
    source = build(protocol, rig, day, skip)
    if not isinstance(source, FrameSource):
        raise SourceError(f"{rig.source_path}: the '{kind}' source does not implement the FrameSource contract")
    return source


# One builder per source kind (imported only when chosen: a real rig never loads the simulator).
_SOURCES: dict[SourceKind, Callable[[Protocol, Rig, int, int], Any]] = {
    SourceKind.SIMULATED: _simulated,
    SourceKind.NETWORK: _network,
    SourceKind.CLOOSE: _cloose,
    SourceKind.TIFF: _tiff,
    SourceKind.CUSTOM: _custom,
}
