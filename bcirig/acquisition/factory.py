"""Choose the frame source the rig file names (``[source] kind``)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from bcirig.acquisition.base import FrameSource, SourceError
from bcirig.config import Protocol, Rig


def _rig_dir(rig: Rig) -> Path | None:
    return Path(rig.source_path).resolve().parent if rig.source_path and Path(rig.source_path).is_file() else None


def _custom(protocol: Protocol, rig: Rig) -> Any:
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
    source: Any
    if kind == "simulated":
        from bcirig.acquisition.simulated import SimulatedSource

        source = SimulatedSource(protocol, rig, day=day, skip=skip)
    elif kind == "network":
        from bcirig.acquisition.network import NetworkSource

        source = NetworkSource(rig.source.network, _rig_dir(rig))
    elif kind == "cloose":
        from bcirig.acquisition.cloose import ClooseSource

        source = ClooseSource(rig.source.cloose, protocol.imaging)
    elif kind == "tiff":
        from bcirig.acquisition.tiff_tail import TiffTailSource

        source = TiffTailSource(rig.source.tiff, protocol.imaging, _rig_dir(rig))
    elif kind == "custom":
        source = _custom(protocol, rig)
    else:
        raise SourceError(f"{rig.source_path}: source.kind = {kind!r} has no implementation")
    if not isinstance(source, FrameSource):
        raise SourceError(f"{rig.source_path}: the {kind!r} source does not implement the FrameSource contract")
    return source
