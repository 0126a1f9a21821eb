"""Is a session file whole? Checked before HDF5 opens it, because a SWMR open of a cut-short file blocks.

HDF5's SWMR reader waits for a writer to extend a file that is shorter than its superblock says (it takes
a short file for one still being written), so ``h5py.File(path, "r", swmr=True)`` on a truncated copy
never returns. The superblock at the start of the file records where the file ends; comparing that with
the file's size takes microseconds and gives one clear line instead.
"""

from __future__ import annotations

from pathlib import Path

from bcirig.recording.reader import SessionFile, SessionFileError

SIGNATURE = b"\x89HDF\r\n\x1a\n"
# The superblock is at 0 or at a power of two from 512 on (after a user block).
_SEARCH = (0, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


def stored_end_of_file(path: str | Path) -> tuple[int, int] | None:
    """(base address, end-of-file address) from the HDF5 superblock; None if there is no superblock."""
    with open(path, "rb") as f:
        for at in _SEARCH:
            f.seek(at)
            head = f.read(64)
            if len(head) < 24 or head[:8] != SIGNATURE:
                continue
            version = head[8]
            if version in (0, 1):
                offsets = head[13]
                base_at = 24 if version == 0 else 28
            else:
                offsets = head[9]
                base_at = 12
            eof_at = base_at + 2 * offsets
            if offsets not in (2, 4, 8) or len(head) < eof_at + offsets:
                return None
            base = int.from_bytes(head[base_at:base_at + offsets], "little")
            eof = int.from_bytes(head[eof_at:eof_at + offsets], "little")
            return base, eof
    return None


def check_whole(path: str | Path) -> None:
    """Raise SessionFileError (one line) if ``path`` is missing, not HDF5, or shorter than it says it is."""
    p = Path(path)
    if not p.is_file():
        raise SessionFileError(f"{p}: no such session file")
    stored = stored_end_of_file(p)
    if stored is None:
        raise SessionFileError(f"{p}: not an HDF5 file (no HDF5 superblock)")
    base, eof = stored
    size = p.stat().st_size
    if size < base + eof:
        raise SessionFileError(
            f"{p}: truncated file: {size:,} bytes of the {base + eof:,} its HDF5 superblock records "
            "(an interrupted copy or a full disk?); copy the whole file again"
        )


def open_session(path: str | Path) -> SessionFile:
    """Open a session file read-only after checking that it is whole (never blocks on a truncated file)."""
    check_whole(path)
    return SessionFile(path)


__all__ = ["check_whole", "open_session", "stored_end_of_file"]
