"""Frames in: one :class:`FrameSource` contract and its implementations (see ``base.py``).

* ``base``       — :class:`RawFrame`, :class:`FrameSource`, :class:`ClosedLoop`, :class:`SourceStats`;
* ``wire``       — the bcirig frame protocol (``PROTOCOL.md``), shared by the receivers and senders.
"""

from bcirig.acquisition.base import ClosedLoop, FrameSource, LickContact, RawFrame, SourceError, SourceStats

__all__ = ["ClosedLoop", "FrameSource", "LickContact", "RawFrame", "SourceError", "SourceStats"]
