"""A session's set-up, decided before any node starts: the frame source, ROIs and reference image.

For a simulated rig the ROIs and the reference come from the simulated mouse (its true footprints and
its motion-free, noise-free image); the set-up is saved to ``setup.npz`` in the run directory so every
node loads the very same arrays (``allow_pickle=False``: arrays only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bcirig.acquisition.simulated import make_mouse
from bcirig.config import Protocol, Rig

DEFAULT_TRUTH_FIELDS: dict[str, tuple[tuple[int, ...], str]] = {"shift": ((2,), "f4"), "licks": ((), "i4")}


@dataclass
class Setup:
    """ROIs (as RoiSet arrays), reference image and ground-truth columns of a session."""

    rois: dict[str, np.ndarray]
    reference: np.ndarray
    truth_fields: dict[str, tuple[tuple[int, ...], str]]

    @property
    def n_rois(self) -> int:
        """Number of ROIs."""
        from bcirig.processing import RoiSet

        return len(RoiSet.from_arrays(self.rois))

    def save(self, path: str | Path) -> None:
        """Write as .npz (arrays only)."""
        truth = np.array([f"{k}:{'x'.join(map(str, s)) or '-'}:{d}" for k, (s, d) in self.truth_fields.items()])
        arrays: dict[str, np.ndarray] = {"reference": self.reference, "_truth": truth}
        arrays.update({f"roi_{k}": v for k, v in self.rois.items()})
        np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle

    @classmethod
    def load(cls, path: str | Path) -> Setup:
        """Read a set-up written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as z:
            rois = {k[4:]: z[k] for k in z.files if k.startswith("roi_")}
            truth: dict[str, tuple[tuple[int, ...], str]] = {}
            for item in z["_truth"]:
                name, shape, dtype = str(item).split(":")
                truth[name] = (tuple(int(s) for s in shape.split("x")) if shape != "-" else (), dtype)
            return cls(rois=rois, reference=z["reference"], truth_fields=truth)


class SetupError(ValueError):
    """No set-up can be decided for this session (the message says what to give)."""


def prepare_setup(protocol: Protocol, rig: Rig) -> Setup:
    """Decide ROIs and reference before the session starts (a simulated rig: from the simulated mouse)."""
    if rig.source.kind != "simulated":
        raise SetupError(f"{rig.source_path}: source.kind = {rig.source.kind!r}: a live source needs its ROIs and "
                         "reference image given: `bcirig run ... --setup SETUP.npz` (e.g. the setup.npz an earlier "
                         "session of this field left in its folder)")
    mouse = make_mouse(protocol, rig)
    truth = getattr(mouse, "truth_fields", None)
    return Setup(
        rois=mouse.rois().to_arrays(),
        reference=np.asarray(mouse.reference_image(), dtype=np.float32),
        truth_fields=truth() if callable(truth) else dict(DEFAULT_TRUTH_FIELDS),
    )
