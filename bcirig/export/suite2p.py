"""A session's ROIs and traces in suite2p's output layout, so offline analysis starts from the same cells.

One folder per imaging plane, ``<out>/suite2p/plane<p>/``, as suite2p writes them (documented in
suite2p's "Outputs" page):

* ``stat.npy`` - object array of one dict per ROI: ``ypix``, ``xpix`` (int32 pixel rows and columns),
  ``lam`` (float32 weights, bcirig's mask weights), ``med`` ([y, x] median pixel), ``npix``,
  ``radius``, ``overlap`` (all False: bcirig masks are used as they are), ``iplane``; plus bcirig's own
  ``name``, ``group``, ``kind`` and ``parent``;
* ``F.npy``, ``Fneu.npy`` - float32 (ROIs, frames): bcirig's recorded F and neuropil, one column per
  readout row (NaN on frames the pipeline rejected);
* ``iscell.npy`` - float (ROIs, 2): [is a cell, probability]; somata [1, 1], dendrites [0, 0];
* ``ops.npy`` - a dict: ``Ly``, ``Lx``, ``nframes``, ``fs``, ``nplanes``, ``nchannels``, ``iplane``,
  ``neucoeff`` (the protocol's neuropil coefficient), ``meanImg`` and ``refImg`` (the registration
  reference), ``yoff``/``xoff`` (the motion, suite2p's sign: the frame is shifted by ``-yoff``, so
  they are minus bcirig's correction ``shift``), ``corrXY``, ``frame_times_s`` and ``bcirig_session``.

``stat.npy`` and ``ops.npy`` are pickled NumPy object arrays, as suite2p's own are; reading them needs
``allow_pickle=True`` (``bcirig.processing.roi_files.load_suite2p``). No ``spks.npy`` is written:
bcirig does not deconvolve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bcirig.export.common import SessionData, load_session_data
from bcirig.processing.rois import RoiKind


def _stat(roi: Any, height: int, width: int) -> dict[str, Any]:
    y, x, w = np.asarray(roi.y, np.int32), np.asarray(roi.x, np.int32), np.asarray(roi.w, np.float32)
    return {
        "ypix": y, "xpix": x, "lam": w,
        "med": [float(np.median(y)), float(np.median(x))],
        "npix": len(y),
        "radius": float(np.sqrt(len(y) / np.pi)),
        "overlap": np.zeros(len(y), bool),
        "iplane": int(roi.plane),
        "name": roi.name, "group": roi.group, "kind": str(roi.kind), "parent": roi.parent,
    }


def export_suite2p(session: str | Path | SessionData, out: str | Path) -> list[Path]:
    """Write suite2p's plane folders under ``out``; returns them (one per plane that has ROIs)."""
    data = session if isinstance(session, SessionData) else load_session_data(session)
    out = Path(out)
    _planes, height, width = data.reference.shape
    ro = data.readout
    shift = ro["shift"].astype(np.float32) if "shift" in ro else np.zeros((len(ro["frame"]), 2), np.float32)
    neucoeff = float(data.protocol.get("readout", {}).get("neuropil_coefficient", 0.7))
    written = []
    for plane in sorted({r.plane for r in data.rois}):
        idx = data.rois.indices(plane=plane)
        folder = out / "suite2p" / f"plane{plane}"
        folder.mkdir(parents=True, exist_ok=True)
        rois = [data.rois[int(i)] for i in idx]
        stat = np.empty(len(rois), dtype=object)
        for k, roi in enumerate(rois):
            stat[k] = _stat(roi, height, width)
        np.save(folder / "stat.npy", stat, allow_pickle=True)
        np.save(folder / "F.npy", np.ascontiguousarray(ro["F"][:, idx].T.astype(np.float32)))
        np.save(folder / "Fneu.npy", np.ascontiguousarray(ro["neuropil"][:, idx].T.astype(np.float32)))
        soma = np.array([r.kind == RoiKind.SOMA for r in rois], np.float64)
        np.save(folder / "iscell.npy", np.stack([soma, soma], axis=1))
        ops = {
            "Ly": int(height), "Lx": int(width), "nframes": len(ro["frame"]), "fs": data.frame_rate_hz,
            "nplanes": int(data.planes), "nchannels": 1, "iplane": int(plane), "neucoeff": neucoeff,
            "allow_overlap": False,
            "meanImg": data.reference[plane].astype(np.float32), "refImg": data.reference[plane].astype(np.float32),
            "yoff": -shift[:, 0], "xoff": -shift[:, 1],
            "corrXY": ro["corr"].astype(np.float32) if "corr" in ro else np.full(len(ro["frame"]), np.nan),
            "frame_times_s": data.time_of(ro["frame"]), "save_path": str(folder),
            "bcirig_session": str(data.path), "bcirig_frames": ro["frame"].astype(np.int64),
        }
        np.save(folder / "ops.npy", np.array(ops, dtype=object), allow_pickle=True)
        written.append(folder)
    return written


__all__ = ["export_suite2p"]
