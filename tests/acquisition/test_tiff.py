"""TiffTailSource against real TIFF files written under tmp_path while it reads."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from bcirig.acquisition import tiff_tail
from bcirig.acquisition.base import FrameSource, RawFrame, SourceError
from bcirig.acquisition.tiff_tail import TiffTailSource
from bcirig.config import Imaging, PixelType, TiffSourceConfig

IMAGING = Imaging(height=24, width=40, dtype=PixelType.UINT16)


def images(n: int, seed: int = 0, shape: tuple[int, int] = (24, 40)) -> list[np.ndarray]:
    """Distinct uint16 images (each page is recognisable)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 65535, size=shape, dtype=np.uint16, endpoint=True) for _ in range(n)]


def scanimage_description(frame_number: int, seconds: float) -> str:
    """The per-frame header ScanImage writes into each page's ImageDescription (the lines used here)."""
    return (f"frameNumbers = {frame_number}\nacquisitionNumbers = 1\nframeNumberAcquisition = {frame_number}\n"
            f"frameTimestamps_sec = {seconds:.6f}\nacqTriggerTimestamps_sec = -1.000000\n")


def tiff_bytes(pages: list[np.ndarray], descriptions: list[str] | None = None, **writer: Any) -> bytes:
    """A complete multi-page TIFF in memory (one IFD per page)."""
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf, **writer) as tw:
        for i, a in enumerate(pages):
            tw.write(a, description=descriptions[i] if descriptions else None, metadata=None, contiguous=False)
    return buf.getvalue()


def append_page(path: Path, a: np.ndarray, description: str | None = None) -> None:
    """Append one page as an acquisition program does: a new IFD and its data, linked from the last one."""
    with tifffile.TiffWriter(path, append=path.exists()) as tw:
        tw.write(a, description=description, metadata=None, contiguous=False)


def collect(src: TiffTailSource, n: int, timeout: float = 10.0,
            each: Callable[[], None] | None = None) -> list[RawFrame]:
    """The node's loop: read every poll interval until ``n`` frames arrived (fails after ``timeout``)."""
    out: list[RawFrame] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < deadline, f"{len(out)} of {n} pages arrived; stats {src.stats}"
        out += src.read()
        if each is not None:
            each()
        time.sleep(src.poll_interval_s)  # the node's timer, not a synchronisation
    return out


def assert_pages(frames: list[RawFrame], expected: list[np.ndarray], first_index: int = 0) -> None:
    assert len(frames) == len(expected)
    for i, (f, a) in enumerate(zip(frames, expected, strict=True)):
        np.testing.assert_array_equal(f.data, a)
        assert f.data.dtype.isnative
        assert (f.index, f.plane, f.t_acq_ns) == (first_index + i, -1, -1)
        assert f.t_arrive_ns > 0


@pytest.fixture
def make_source(tmp_path: Path) -> Iterator[Callable[..., TiffTailSource]]:
    """Open TiffTailSources on tmp_path/"acq" (relative, from base_dir); closed at teardown."""
    (tmp_path / "acq").mkdir()
    made: list[TiffTailSource] = []

    def make(**cfg: Any) -> TiffTailSource:
        cfg = {"directory": "acq", "poll_ms": 2.0, **cfg}
        src = TiffTailSource(TiffSourceConfig(**cfg), IMAGING, base_dir=tmp_path)
        made.append(src)
        src.open()
        return src

    yield make
    for src in made:
        src.close()


def test_missing_directory_is_named(tmp_path: Path) -> None:
    src = TiffTailSource(TiffSourceConfig(directory="nowhere"), IMAGING, base_dir=tmp_path)
    with pytest.raises(SourceError, match="nowhere"):
        src.open()
    with pytest.raises(SourceError, match="directory"):
        TiffTailSource(TiffSourceConfig(), IMAGING).open()


def test_is_a_free_running_source_polled_on_a_timer(make_source: Callable[..., TiffTailSource]) -> None:
    src = make_source(poll_ms=25.0)
    assert isinstance(src, FrameSource)
    assert (src.paced, src.poll_fds(), src.poll_interval_s) == (False, [], 0.025)
    assert src.read() == []
    src.close()
    src.close()


def test_pages_appended_while_reading_arrive_in_order(make_source: Callable[..., TiffTailSource],
                                                      tmp_path: Path) -> None:
    src = make_source()
    pages = images(30, seed=1)
    turns = threading.Semaphore(0)  # one page per read() turn, so writes land between (and during) reads
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for a in pages:
                assert turns.acquire(timeout=10.0)
                append_page(tmp_path / "acq" / "file_00001.tif", a)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    frames = collect(src, 30, each=turns.release)
    t.join(10.0)
    assert not errors, errors
    assert_pages(frames, pages)
    assert src.stats.received == 30 and src.stats.malformed == 0


@pytest.mark.parametrize("writer", [{}, {"bigtiff": True}, {"byteorder": ">"}, {"bigtiff": True, "byteorder": ">"}],
                         ids=["classic", "bigtiff", "big-endian", "bigtiff-big-endian"])
def test_a_partly_written_file_never_yields_garbage(make_source: Callable[..., TiffTailSource], tmp_path: Path,
                                                    writer: dict[str, object]) -> None:
    src = make_source()
    pages = images(4, seed=2)
    whole = tiff_bytes(pages, [f"page {i} " + "x" * 40 for i in range(4)], **writer)
    frames: list[RawFrame] = []
    with open(tmp_path / "acq" / "a.tif", "wb") as f:
        for start in range(0, len(whole), 53):  # cuts land in the header, in IFDs, tag values and pixels
            f.write(whole[start:start + 53])
            f.flush()
            frames += src.read()
            for got, a in zip(frames, pages, strict=False):  # whatever has arrived is right and in order
                np.testing.assert_array_equal(got.data, a)
    frames += collect(src, 4 - len(frames))
    assert_pages(frames, pages)
    assert src.stats.malformed == 0


def test_rollover_finishes_the_old_file_first(make_source: Callable[..., TiffTailSource], tmp_path: Path) -> None:
    src = make_source()
    acq = tmp_path / "acq"
    pages = images(9, seed=3)
    for a in pages[:3]:
        append_page(acq / "run_00001.tif", a)
    frames = collect(src, 3)
    for a in pages[3:5]:
        append_page(acq / "run_00001.tif", a)  # not yet read when the next file appears
    for a in pages[5:7]:
        append_page(acq / "run_00002.tif", a)
    frames += collect(src, 4)
    append_page(acq / "run_00003.tif", pages[7])
    append_page(acq / "run_00003.tif", pages[8])
    frames += collect(src, 2)
    assert_pages(frames, pages)
    assert src.read() == [] and src.stats.malformed == 0


def test_scanimage_frame_numbers_and_timestamps(make_source: Callable[..., TiffTailSource], tmp_path: Path) -> None:
    src = make_source()
    pages = images(5, seed=4)
    for i, a in enumerate(pages):
        append_page(tmp_path / "acq" / "si_00001.tif", a, scanimage_description(101 + i, 3.0 + i / 30))
    frames = collect(src, 5)
    assert [f.index for f in frames] == [100, 101, 102, 103, 104]
    assert [f.t_acq_ns for f in frames] == [round(round(3.0 + i / 30, 6) * 1e9) for i in range(5)]
    for f, a in zip(frames, pages, strict=True):
        np.testing.assert_array_equal(f.data, a)


def test_a_file_that_is_not_a_tiff_is_counted_once_and_skipped(make_source: Callable[..., TiffTailSource],
                                                               tmp_path: Path) -> None:
    src = make_source()
    acq = tmp_path / "acq"
    pages = images(4, seed=5)
    append_page(acq / "f_001.tif", pages[0])
    append_page(acq / "f_001.tif", pages[1])
    (acq / "f_002.tif").write_bytes(b"this is a text file, not an image\n" * 10)
    (acq / "notes.txt").write_bytes(b"not matching the pattern")
    append_page(acq / "f_003.tif", pages[2])
    append_page(acq / "f_003.tif", pages[3])
    frames = collect(src, 4)
    for _ in range(5):
        frames += src.read()
    assert_pages(frames, pages)
    assert src.stats.malformed == 1 and "f_002.tif" in src.stats.last_error


@pytest.mark.parametrize("from_start", [False, True])
def test_frames_there_at_open_are_skipped_unless_from_start(tmp_path: Path, from_start: bool) -> None:
    acq = tmp_path / "acq"
    acq.mkdir()
    pages = images(7, seed=6)
    for a in pages[:3]:
        append_page(acq / "s_1.tif", a)
    for a in pages[3:5]:
        append_page(acq / "s_2.tif", a)
    src = TiffTailSource(TiffSourceConfig(directory=str(acq), poll_ms=2.0, from_start=from_start), IMAGING)
    src.open()
    try:
        before = collect(src, 5) if from_start else src.read()
        append_page(acq / "s_2.tif", pages[5])
        append_page(acq / "s_3.tif", pages[6])
        after = collect(src, 2)
    finally:
        src.close()
    if from_start:
        assert_pages(before, pages[:5])
    else:
        assert before == []
    assert_pages(after, pages[5:], first_index=5)  # the index counts every page in the folder


def test_a_page_that_never_completes_is_given_up_after_rollover(make_source: Callable[..., TiffTailSource],
                                                                tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tiff_tail, "ROLLOVER_GRACE_S", 0.05)
    src = make_source()
    acq = tmp_path / "acq"
    pages = images(5, seed=8)
    (acq / "t_1.tif").write_bytes(tiff_bytes(pages[:3])[:-10])  # the writer died inside page 3's pixels
    frames = collect(src, 2)
    append_page(acq / "t_2.tif", pages[3])
    append_page(acq / "t_2.tif", pages[4])
    frames += collect(src, 2)
    assert_pages(frames[:2], pages[:2])
    assert_pages(frames[2:], pages[3:], first_index=3)  # the lost page keeps its place: a gap in the index
    assert src.stats.malformed == 1 and "t_1.tif" in src.stats.last_error


def test_polling_a_long_file_reads_only_what_is_new(make_source: Callable[..., TiffTailSource], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    acq = tmp_path / "acq"
    pages = images(400, seed=9, shape=(8, 8))
    (acq / "long.tif").write_bytes(tiff_bytes(pages))
    opened: list[object] = []
    real = tifffile.TiffFile

    def counting(*args: Any, **kwargs: Any) -> tifffile.TiffFile:
        opened.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(tifffile, "TiffFile", counting)  # the module tiff_tail reads TiffFile from at each poll
    src = make_source()  # skipping 400 pages walks their directories without tifffile, but for the last
    assert len(opened) <= 1
    for _ in range(20):
        assert src.read() == []
    assert len(opened) <= 1  # an unchanged file is not parsed again
    append_page(acq / "long.tif", pages[0])
    (f,) = collect(src, 1)
    assert f.index == 400 and len(opened) <= 2
