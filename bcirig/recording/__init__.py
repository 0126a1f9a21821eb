"""Session files: the HDF5 writer (SWMR, flushed while running) and reader."""

from bcirig.recording.reader import SessionFile, SessionFileError
from bcirig.recording.writer import SessionWriter

__all__ = ["SessionFile", "SessionFileError", "SessionWriter"]
