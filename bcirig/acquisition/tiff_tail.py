"""Frames from TIFF stacks as an acquisition program writes them (ScanImage logging, PrairieView, ThorImage).

:class:`TiffTailSource` follows a folder: the files matching a pattern, in name order, each read page by
page as pages are appended, the next file once the writer has moved on to it. A page is delivered only
when all of its bytes are in the file, so a file caught half-written yields nothing wrong, only later.

Reading cost stays small while a file grows to thousands of pages: the chain of image file directories
(IFDs) is walked here, remembering where the newest consumed page keeps the offset of the next one, so
each poll reads a few bytes; :mod:`tifffile` decodes only the pages that are new.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import tifffile

from bcirig.acquisition.base import RawFrame, SourceError, SourceStats
from bcirig.config import Imaging, TiffSourceConfig

MAX_PAGES_PER_READ = 64  # catching up on a long folder must not hold the node's loop (nor its memory)
ROLLOVER_GRACE_S = 2.0  # a file left with an incomplete page is given up this long after a newer one appears

_FRAME_NUMBER = re.compile(r"^\s*frameNumbers\s*=\s*(\d+)", re.MULTILINE)
_FRAME_TIME = re.compile(r"^\s*frameTimestamps_sec\s*=\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)", re.MULTILINE)


@dataclass(frozen=True)
class _Layout:
    """Where a TIFF flavour (classic or BigTIFF, either byte order) keeps its offsets."""

    order: str  # struct byte order, "<" or ">"
    big: bool
    offset: struct.Struct  # an offset (to an IFD or a value)
    tagno: struct.Struct  # an IFD's count of entries
    entry: struct.Struct  # one IFD entry: code, type, count, value or offset to it
    first_pointer: int  # where the header keeps the offset of the first IFD


def _layout(order: str, big: bool) -> _Layout:
    s = struct.Struct
    if big:
        return _Layout(order, big, s(order + "Q"), s(order + "Q"), s(order + "HHQQ"), 8)
    return _Layout(order, big, s(order + "I"), s(order + "H"), s(order + "HHII"), 4)


_LAYOUTS = {b"II*\x00": _layout("<", False), b"MM\x00*": _layout(">", False),
            b"II+\x00": _layout("<", True), b"MM\x00+": _layout(">", True)}


@dataclass
class _Tail:
    """How far one file has been consumed."""

    path: Path
    seen_ns: int  # when it was first listed
    pages: int = 0  # pages consumed (delivered, skipped at open, or counted malformed)
    layout: _Layout | None = None
    pointer: int = -1  # where the offset of the next IFD is stored (in the header or the last consumed IFD)
    stalled: tuple[int, bool] | None = None  # (file size, writer moved on) when the next page was not ready
    begun: bool = False  # the next page is linked (it exists, perhaps not yet complete)


class TiffTailSource:
    """Follows a folder of TIFF stacks being written (free-running, no fds: the node polls every
    ``cfg.poll_ms``).

    Files matching ``cfg.pattern`` are read in name order. Frames already in the folder at :meth:`open`
    are skipped unless ``cfg.from_start``. A file is left for the next one when the next one exists and
    this one has no further page (or, if its last page stays incomplete, :data:`ROLLOVER_GRACE_S` after the
    next one appeared: that page is counted malformed). A file that is not a TIFF is counted malformed once
    and skipped; so is a page that cannot be decoded once the writer has moved past it.

    Indices and times: ScanImage's per-page ImageDescription gives ``frameNumbers`` (1-based, so
    ``index = frameNumbers - 1``) and ``frameTimestamps_sec`` (``t_acq_ns``). Without them ``index`` is the
    page's place among all pages of the folder's matching files (pages skipped at open included, so the
    index still says which plane a page is when the folder started at plane 0) and ``t_acq_ns = -1``.
    ``plane`` is left -1 (the assembler uses index modulo planes). ``t_arrive_ns`` is when this source
    found the page complete, up to one poll interval after it was written.
    """

    paced = False

    def __init__(self, cfg: TiffSourceConfig, imaging: Imaging, base_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.imaging = imaging  # frames are delivered as decoded; the assembler checks them against it
        self.poll_interval_s = cfg.poll_ms / 1000.0
        self.stats = SourceStats()
        directory = Path(cfg.directory)
        if not directory.is_absolute() and base_dir is not None:
            directory = base_dir / directory
        self.directory = directory
        self._files: list[_Tail] = []
        self._known: set[str] = set()
        self._cur = 0  # index in _files of the file being read
        self._ordinal = 0  # pages consumed over all files: the index when the file gives none
        self._closed = False

    def open(self) -> None:
        """Check the folder and, unless ``from_start``, skip every complete page already in it."""
        if not self.cfg.directory:
            raise SourceError("TIFF source: no directory configured (source.tiff.directory)")
        if not self.directory.is_dir():
            raise SourceError(f"TIFF source: directory {self.directory} does not exist (or is not a folder)")
        self._list()
        if self.cfg.from_start:
            return
        while self._cur < len(self._files):
            state = self._advance(self._files[self._cur], [], math.inf, deliver=False)
            if state == "bad" or (state == "end" and self._cur + 1 < len(self._files)):
                self._cur += 1
            else:
                break

    def poll_fds(self) -> list[Any]:
        """None: files give no readiness events, the node polls every :attr:`poll_interval_s`."""
        return []

    def close(self) -> None:
        """Stop reading (files are opened only within :meth:`read`, so nothing else is held); idempotent."""
        self._closed = True

    def read(self) -> list[RawFrame]:
        """Every page completed since the last call (at most :data:`MAX_PAGES_PER_READ`); never raises."""
        if self._closed:
            return []
        self._list()  # before reading: a newer file listed now means the current one was complete before
        out: list[RawFrame] = []
        now = time.monotonic_ns()
        while self._cur < len(self._files) and len(out) < MAX_PAGES_PER_READ:
            tail = self._files[self._cur]
            state = self._advance(tail, out, MAX_PAGES_PER_READ - len(out), deliver=True)
            newer = self._files[self._cur + 1] if self._cur + 1 < len(self._files) else None
            if state == "bad" or (state == "end" and newer is not None):
                self._cur += 1
            elif state == "incomplete" and newer is not None and now - newer.seen_ns > ROLLOVER_GRACE_S * 1e9:
                self._malformed(f"{tail.path.name}: page {tail.pages} never completed; went on to {newer.path.name}")
                self._ordinal += tail.begun  # a lost page still has its place: the index shows the gap
                self._cur += 1
            else:
                break
        return out

    def _list(self) -> None:
        try:
            names = sorted(e.name for e in os.scandir(self.directory)
                           if fnmatch.fnmatch(e.name, self.cfg.pattern) and e.is_file())
        except OSError as exc:
            self.stats.last_error = f"cannot list {self.directory}: {exc}"
            return
        now = time.monotonic_ns()
        for name in names:
            if name in self._known:
                continue
            self._known.add(name)
            if self._files and self._cur < len(self._files) and name < self._files[self._cur].path.name:
                # Files are followed in name order; one that sorts before the file being read came too late.
                self.stats.last_error = f"{name} appeared after later files were read; ignored"
                continue
            self._files.append(_Tail(self.directory / name, seen_ns=now))
        self._files[self._cur:] = sorted(self._files[self._cur:], key=lambda t: t.path.name)

    def _malformed(self, why: str) -> None:
        self.stats.malformed += 1
        self.stats.last_error = f"TIFF source: {why}"

    def _advance(self, tail: _Tail, out: list[RawFrame], limit: float, *, deliver: bool) -> str:
        """Consume the pages of ``tail`` that are complete, up to ``limit`` delivered; returns why it
        stopped: "end" (no further page yet), "incomplete" (a page still being written), "limit", "bad"."""
        try:
            f = open(tail.path, "rb")  # noqa: SIM115  (closed below; opened per poll so the writer can rename)
        except OSError as exc:
            self._malformed(f"{tail.path.name}: cannot open ({exc}); skipped")
            return "bad"
        tif: tifffile.TiffFile | None = None
        try:
            size = os.fstat(f.fileno()).st_size
            if tail.layout is None:
                head = f.read(16)
                layout = _LAYOUTS.get(head[:4])
                if layout is None and len(head) < 4 and any(m.startswith(head) for m in _LAYOUTS):
                    return "incomplete"  # the header is being written
                if layout is not None and layout.big and len(head) < 16:
                    return "incomplete"
                if layout is None or (layout.big and struct.unpack(layout.order + "HH", head[4:8]) != (8, 0)):
                    self._malformed(f"{tail.path.name} is not a TIFF file (starts {head[:8]!r}); skipped")
                    return "bad"
                tail.layout, tail.pointer = layout, layout.first_pointer
            lay = tail.layout
            delivered = 0
            while delivered < limit:
                ifd = _uint(f, tail.pointer, lay.offset, size)
                if ifd is None:
                    return "incomplete"
                if ifd == 0:
                    return "end"
                tail.begun = True
                if tail.pages * 6 > size:  # each IFD takes >= 6 bytes of its own: more pages means a loop
                    self._malformed(f"{tail.path.name}: its chain of pages loops back; skipped")
                    return "bad"
                tagno = _uint(f, ifd, lay.tagno, size)
                if tagno is None:
                    return "incomplete"
                pointer = ifd + lay.tagno.size + tagno * lay.entry.size
                nxt = _uint(f, pointer, lay.offset, size)
                if nxt is None:
                    return "incomplete"
                # The writer has linked a later page and that page's directory is in the file: this page
                # is finished (a file copied in byte order links the next page before it writes this one).
                moved_on = nxt != 0 and _uint(f, nxt, lay.tagno, size) is not None
                if not deliver and moved_on:
                    self._consume(tail, pointer)  # skipping: a finished page needs no parsing
                    continue
                if tail.stalled == (size, moved_on):
                    return "incomplete"  # nothing has changed since this page was found not ready
                if not _values_present(f, ifd, tagno, lay, size):
                    tail.stalled = (size, moved_on)  # tag values still being written (tifffile would log errors)
                    return "incomplete"
                if tif is None:
                    tif = _tiff(f)
                page = _page(tif, ifd, tail.pages) if tif is not None else None
                end = _data_end(page)
                if (end is None and not moved_on) or (end is not None and end > size):
                    tail.stalled = (size, moved_on)  # not fully written yet
                    return "incomplete"
                if page is None or end is None:
                    self._malformed(f"{tail.path.name}: page {tail.pages} has an unreadable directory; skipped")
                elif deliver:
                    frame = self._frame(tail, page)
                    if frame is not None:
                        out.append(frame)
                        delivered += 1
                self._consume(tail, pointer)
            return "limit"
        except OSError as exc:
            self.stats.last_error = f"TIFF source: reading {tail.path.name}: {exc}"
            return "incomplete"
        finally:
            if tif is not None:
                tif.close()  # does not close f, which tifffile did not open
            f.close()

    def _consume(self, tail: _Tail, pointer: int) -> None:
        tail.pages += 1
        tail.pointer = pointer
        tail.stalled = None
        tail.begun = False
        self._ordinal += 1

    def _frame(self, tail: _Tail, page: tifffile.TiffPage) -> RawFrame | None:
        try:
            data = np.asarray(page.asarray())
        except Exception as exc:  # tifffile raises many kinds for bad data (codecs, shapes): all mean "skip"
            self._malformed(f"{tail.path.name}: page {tail.pages} cannot be decoded ({exc!r:.120}); skipped")
            return None
        if not data.dtype.isnative:
            data = data.astype(data.dtype.newbyteorder("="))
        t_arrive = time.monotonic_ns()
        self.stats.received += 1
        index, t_acq = self._ordinal, -1
        desc = page.description if isinstance(page.description, str) else ""
        if m := _FRAME_NUMBER.search(desc):
            index = int(m.group(1)) - 1
        if m := _FRAME_TIME.search(desc):
            t_acq = round(float(m.group(1)) * 1e9)
        return RawFrame(data=data, index=index, plane=-1, t_acq_ns=t_acq, t_arrive_ns=t_arrive)


def _uint(f: BinaryIO, at: int, fmt: struct.Struct, size: int) -> int | None:
    """The unsigned integer stored at ``at``, or None if the file does not reach that far yet."""
    if at < 0 or at + fmt.size > size:
        return None
    f.seek(at)
    raw = f.read(fmt.size)
    return int(fmt.unpack(raw)[0]) if len(raw) == fmt.size else None


_TYPE_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}


def _values_present(f: BinaryIO, ifd: int, tagno: int, lay: _Layout, size: int) -> bool:
    """Whether every tag value the directory at ``ifd`` points to lies within the file's ``size`` bytes."""
    f.seek(ifd + lay.tagno.size)
    entries = f.read(tagno * lay.entry.size)
    if len(entries) != tagno * lay.entry.size:
        return False
    inline = lay.offset.size  # values this small are stored in the entry itself
    for i in range(tagno):
        _, kind, count, where = lay.entry.unpack_from(entries, i * lay.entry.size)
        nbytes = _TYPE_BYTES.get(kind, 0) * count
        if nbytes > inline and where + nbytes > size:
            return False
    return True


def _tiff(f: BinaryIO) -> tifffile.TiffFile | None:
    """tifffile's view of the open file (its header and first page), or None if it cannot parse them."""
    try:
        # offset=0: tifffile takes an open file to start where it is positioned. Not is_scanimage: that
        # makes tifffile index every frame of an old-style ScanImage file at once.
        return tifffile.TiffFile(f, offset=0, is_scanimage=False, is_lsm=False, is_ndpi=False)
    except Exception:  # a first page still being written, or not one tifffile understands: as a bad page
        return None


def _page(tif: tifffile.TiffFile, ifd: int, index: int) -> tifffile.TiffPage | None:
    """The page whose IFD is at ``ifd``, or None if tifffile cannot parse it."""
    try:
        tif.filehandle.seek(ifd)
        return tifffile.TiffPage(tif, index=index)
    except Exception:  # a directory tifffile cannot make sense of (yet): the caller decides
        return None


def _data_end(page: tifffile.TiffPage | None) -> int | None:
    """Where the page's image data end in the file, or None if its directory does not say."""
    if page is None or not page.dataoffsets or len(page.dataoffsets) != len(page.databytecounts):
        return None
    return max(int(o) + int(n) for o, n in zip(page.dataoffsets, page.databytecounts, strict=True))
