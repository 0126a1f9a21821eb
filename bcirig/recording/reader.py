"""Read a session file, finished or still being written (SWMR)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from bcirig.recording import layout


class SessionFileError(ValueError):
    """The file is not a bcirig session file of a version this bcirig reads."""


class SessionFile:
    """A session file opened read-only; tables come back as dicts of numpy arrays."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SessionFileError(f"{self.path}: no such session file")
        try:
            self.f = h5py.File(self.path, "r", libver="latest", swmr=True)
        except OSError as exc:
            raise SessionFileError(f"{self.path}: cannot open as HDF5 ({exc})") from None
        fmt = self.f.attrs.get("format")
        if fmt != layout.FORMAT:
            raise SessionFileError(f"{self.path}: format attribute is {fmt!r}, expected {layout.FORMAT!r}")
        version = int(self.f.attrs.get("version", -1))
        if version not in layout.READABLE:
            raise SessionFileError(f"{self.path}: layout version {version}; this bcirig reads "
                                   f"{', '.join(map(str, layout.READABLE))}")

    def __enter__(self) -> SessionFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self.f.close()

    def refresh(self) -> None:
        """See rows appended since opening (SWMR readers must refresh)."""
        for obj in self.f.values():
            if isinstance(obj, h5py.Group):
                for ds in obj.values():
                    ds.refresh()
            else:
                obj.refresh()

    @property
    def attrs(self) -> dict[str, Any]:
        """File attributes (protocol and rig text, versions, summary)."""
        return dict(self.f.attrs)

    @property
    def protocol_text(self) -> str:
        """The protocol file's text as run."""
        return str(self.f.attrs["protocol"])

    @property
    def summary(self) -> dict[str, Any]:
        """The summary written at close ({} for an incomplete file)."""
        raw = self.f.attrs.get("summary")
        return json.loads(raw) if raw else {}

    def table(self, name: str) -> dict[str, np.ndarray]:
        """All columns of one table, equal length (the shortest, if read mid-append)."""
        g = self.f[name]
        cols = {k: g[k][()] for k in g}
        n = min((len(v) for v in cols.values()), default=0)
        return {k: v[:n] for k, v in cols.items()}

    def presentations(self) -> dict[str, np.ndarray]:
        """The presentation table (display swaps, sound outputs); empty columns in files before version 3."""
        if "presentation" in self.f:
            return self.table("presentation")
        cols = dict(layout.tables(0, {}))["presentation"]
        return {name: np.zeros((0, *shape), dtype=dtype) for name, dtype, shape in cols}

    def lickport(self) -> dict[str, np.ndarray]:
        """The lickport table (commanded and measured position per frame); empty columns when the file has none
        (a rig without a lickport records no rows; files written before the table lack it)."""
        if "lickport" in self.f:
            return self.table("lickport")
        cols = layout.tables(0, {})["lickport"]
        return {name: np.zeros((0, *shape), dtype=dtype) for name, dtype, shape in cols}

    def events(self) -> list[dict[str, Any]]:
        """The event table as dicts with decoded JSON data."""
        ev = self.table("events")
        return [
            {"frame": int(f), "name": n.decode(), "trial": int(t), "data": json.loads(d)}
            for f, n, t, d in zip(ev["frame"], ev["name"], ev["trial"], ev["data"], strict=True)
        ]

    @property
    def has_frames(self) -> bool:
        """Whether raw frames were recorded."""
        return "frames" in self.f

    def frames(self) -> h5py.Dataset:
        """The raw frames dataset (T, planes, H, W)."""
        return self.f["frames"]

    def frame_index(self) -> np.ndarray:
        """(T, 2): imaging frame index and source stamp of each recorded frame."""
        return np.asarray(self.f["frame_index"][()])

    def rois(self) -> dict[str, np.ndarray]:
        """The ROI set's arrays (see RoiSet.from_arrays)."""
        return {k: v[()] for k, v in self.f["rois"].items()}

    def reference(self) -> np.ndarray:
        """The registration reference image."""
        return np.asarray(self.f["reference"][()])
