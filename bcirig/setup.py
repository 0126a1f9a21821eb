"""A session's set-up, frozen before the baseline: the reference image and the ROIs.

The set-up phase is a stage, :class:`SetupPhase`: it is given the first ``[setup] frames`` live volumes
(the supervisor streams them from the rig's frame source before any node starts) and decides

1. the **reference image**: every frame's BCI plane is registered to the mean of the first frames, the
   frames are moved back by the whole-pixel shift and averaged (every plane);
2. the **ROIs**, by ``[setup] rois`` on day 1 — candidates detected on the mean and local-correlation
   images (``detect``), a bcirig ROI file (``file``), an ImageJ/Fiji ROI set (``imagej``), suite2p's
   output (``suite2p``, pickled: only with ``allow_pickle``) — and from day 2 on (``later_days =
   "previous"``) the previous day's ROIs moved by the field-of-view offset found by registering today's
   reference to the previous day's, refused below ``min_alignment_quality``;
3. the **groups** (P+, P-, E1 ...): from ``[setup] choose`` or ``--choose`` (indices of candidates or of
   the file's ROIs), from the names in the ROI file, or, on a simulated rig, from the simulated operator
   (the frame source's ``suggest_groups``).

The result is saved as ``setup.npz`` in the session folder (arrays only, ``allow_pickle=False``) and, with
the set-up frames and its report, in the session file; every node loads the very same arrays. The
simulated rig goes through the same phase; ``rois = "truth"`` (simulated rigs only, for sweeps) takes the
true footprints and the noise-free image instead, without streaming.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bcirig.acquisition.simulated import RECORDED_TRUTH, make_mouse
from bcirig.config import LaterDays, Protocol, Rig, RoiMethod, SourceKind
from bcirig.processing.rois import Roi, RoiError, RoiKind, RoiSet
from bcirig.recording.layout import truth_fields

DEFAULT_TRUTH_FIELDS = truth_fields(RECORDED_TRUTH)  # a live simulated session's truth columns
PROVISIONAL_FRAMES = 30  # frames averaged into the first reference that every set-up frame is registered to
SUMMARY_FRAMES = 150  # frames (evenly spaced) in the summary images that detection looks at


@dataclass
class Setup:
    """ROIs (as RoiSet arrays), reference image and ground-truth columns of a session."""

    rois: dict[str, np.ndarray]
    reference: np.ndarray
    truth_fields: dict[str, tuple[tuple[int, ...], str]]
    report: dict[str, Any] = field(default_factory=dict)  # how the set-up was decided (method, offset ...)

    @property
    def n_rois(self) -> int:
        """Number of ROIs."""
        from bcirig.processing import RoiSet

        return len(RoiSet.from_arrays(self.rois))

    def save(self, path: str | Path) -> None:
        """Write as .npz (arrays only)."""
        truth = np.array([f"{k}:{'x'.join(map(str, s)) or '-'}:{d}" for k, (s, d) in self.truth_fields.items()])
        arrays: dict[str, np.ndarray] = {"reference": self.reference, "_truth": truth,
                                         "_report": np.array(json.dumps(self.report, allow_nan=True))}
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
            report = json.loads(str(z["_report"])) if "_report" in z.files else {}
            return cls(rois=rois, reference=z["reference"], truth_fields=truth, report=report)

    def roi_set(self) -> RoiSet:
        """The ROIs as a RoiSet."""
        return RoiSet.from_arrays(self.rois)


class SetupError(ValueError):
    """No set-up can be decided for this session (the message says what to give or check)."""


def truth_setup(protocol: Protocol, rig: Rig) -> Setup:
    """The simulated mouse's true ROIs and noise-free image (``[setup] rois = "truth"``; sweeps only)."""
    if rig.source.kind != SourceKind.SIMULATED:
        raise SetupError(f"{protocol.source_path}: setup.rois = 'truth' needs a simulated rig; this rig's source "
                         f"is '{rig.source.kind}'")
    mouse = make_mouse(protocol, rig)
    return Setup(rois=mouse.rois().to_arrays(), reference=np.asarray(mouse.reference_image(), dtype=np.float32),
                 truth_fields=dict(DEFAULT_TRUTH_FIELDS), report={"method": RoiMethod.TRUTH})


def prepare_setup(protocol: Protocol, rig: Rig) -> Setup:
    """The set-up decided without live frames: only the simulated rig's true footprints can be."""
    if rig.source.kind != SourceKind.SIMULATED:
        raise SetupError(f"{rig.source_path}: source.kind = '{rig.source.kind}': a live source needs its ROIs and "
                         "reference image given: `bcirig run ... --setup SETUP.npz` (e.g. the setup.npz an earlier "
                         "session of this field left in its folder)")
    return truth_setup(protocol, rig)


@dataclass(frozen=True)
class RoiChoice:
    """Where day 1's ROIs come from (the protocol's ``[setup]``, overridden on the command line)."""

    method: RoiMethod
    path: str = ""
    choose: dict[str, list[int]] = field(default_factory=dict)
    allow_pickle: bool = False

    @classmethod
    def from_protocol(cls, protocol: Protocol, *, rois: str = "", choose: dict[str, list[int]] | None = None,
                      allow_pickle: bool = False) -> RoiChoice:
        """The protocol's choice, with ``rois`` (a file or folder) and ``choose`` from the command line."""
        cfg = protocol.setup
        path, method = cfg.roi_file, cfg.rois
        if path and not Path(path).is_absolute() and protocol.source_path:
            path = str(Path(protocol.source_path).resolve().parent / path)
        if rois:
            path = rois
            p = Path(rois)
            method = (RoiMethod.SUITE2P if p.is_dir() else RoiMethod.IMAGEJ if p.suffix.lower() in (".roi", ".zip")
                      else RoiMethod.FILE)
        picked = {str(k): [int(i) for i in v] for k, v in (choose if choose is not None else cfg.choose).items()}
        return cls(method=method, path=path, choose=picked, allow_pickle=allow_pickle or cfg.allow_pickle)


@dataclass(frozen=True)
class PreviousSetup:
    """The previous training day's set-up, to find the same neurons again."""

    rois: RoiSet
    reference: np.ndarray
    day: int
    folder: str = ""


def parse_choose(text: str) -> dict[str, list[int]]:
    """``"P+=0,2,4,6 P-=1,3,5,7"`` -> {"P+": [0, 2, 4, 6], "P-": [1, 3, 5, 7]} (the ``--choose`` syntax)."""
    out: dict[str, list[int]] = {}
    for part in text.replace(";", " ").split():
        group, sep, indices = part.partition("=")
        try:
            if not sep or not group:
                raise ValueError(part)
            out[group] = [int(i) for i in indices.split(",") if i != ""]
        except ValueError:
            raise SetupError(f"--choose {text!r}: expected GROUP=I,J,... per group, e.g. 'P+=0,2 P-=1,3'") from None
    return out


class SetupPhase:
    """Live volumes in -> reference image and ROIs out (a stage: no clock, no sockets; deterministic).

    The work is done as the frames arrive (:meth:`add`), so that on a live rig the phase costs little more
    than the frames' own time: from the ``PROVISIONAL_FRAMES``-th frame on, each frame's BCI plane is
    registered to the provisional reference, moved back by whole pixels and added to the average and,
    for detection on day 1, every ``stride``-th frame to the summary images (at most ``SUMMARY_FRAMES``
    of them: a correlation image needs no more).
    """

    def __init__(self, protocol: Protocol, choice: RoiChoice, previous: PreviousSetup | None = None,
                 day: int = 1) -> None:
        self.protocol, self.choice, self.previous, self.day = protocol, choice, previous, day
        img = protocol.imaging
        self.shape = (img.planes, img.height, img.width)
        self.frames: list[np.ndarray] = []
        self.needed = protocol.setup.frames
        self.later = previous is not None and protocol.setup.later_days == LaterDays.PREVIOUS
        self.detecting = not self.later and choice.method == RoiMethod.DETECT
        self.stride = max(1, -(-self.needed // SUMMARY_FRAMES))
        planes = [img.bci_plane]
        dplane = _dendrite_plane(protocol)
        if dplane is not None:
            planes.append(dplane)
        self.summary_planes = planes if self.detecting else []
        self._reg: Any = None
        self._shifts: list[tuple[float, float]] = []
        self._total = np.zeros(self.shape, np.float64)
        self._summaries: dict[int, Any] = {}

    @property
    def done(self) -> bool:
        """True once enough frames are in."""
        return len(self.frames) >= self.needed

    def add(self, volume: np.ndarray) -> None:
        """One live volume (planes, height, width), as the pipeline would get it."""
        self.frames.append(np.array(volume, copy=True))
        if self._reg is None:
            if len(self.frames) >= min(PROVISIONAL_FRAMES, self.needed):
                self._start()
        else:
            self._take(len(self.frames) - 1)

    def _start(self) -> None:
        """The provisional reference from the frames so far; then take every frame already in."""
        from bcirig.processing.detection import SummaryImages
        from bcirig.processing.registration import RigidRegistration

        plane = self.protocol.imaging.bci_plane
        provisional = np.asarray(np.mean([f[plane] for f in self.frames], axis=0, dtype=np.float64), np.float32)
        self._reg = RigidRegistration(provisional, self.protocol.registration)
        h, w = self.shape[1:]
        self._summaries = {p: SummaryImages(h, w) for p in self.summary_planes}
        for i in range(len(self.frames)):
            self._take(i)

    def _take(self, i: int) -> None:
        frame = self.frames[i]
        dy, dx, _ = self._reg.register(frame[self.protocol.imaging.bci_plane])
        self._shifts.append((dy, dx))
        moved = np.roll(frame, (-round(dy), -round(dx)), axis=(1, 2))  # register() gives the motion: undo it
        self._total += moved
        if i % self.stride == 0:
            for p, acc in self._summaries.items():
                acc.add(moved[p])

    # ------------------------------------------------------------------ deciding
    def reference_image(self) -> np.ndarray:
        """The reference so far: the registered frames' average (every plane)."""
        if self._reg is None:
            self._start()
        return (self._total / max(1, len(self.frames))).astype(np.float32)

    def candidates(self) -> list[Any]:
        """Day 1's detected candidates, best first (the operator picks from them in the console)."""
        from bcirig.processing.detection import detect_candidates

        if not self.detecting or not self.frames:
            return []
        if self._reg is None:
            self._start()
        img = self.protocol.imaging
        radius = self.protocol.setup.cell_radius_px or max(3.0, min(img.height, img.width) / 64)
        acc = self._summaries[img.bci_plane]
        return detect_candidates(acc.mean_image(), acc.correlation_image(), cell_radius_px=radius,
                                 plane=img.bci_plane)

    def finish(self, suggest: Any = None, chosen: RoiSet | None = None) -> Setup:
        """Decide. ``suggest(candidates) -> (groups, score)``: the simulated operator, used only when no
        choice was given; ``chosen``: the ROIs the operator accepted in the console (then nothing else
        decides); raises :class:`SetupError` saying what to give or check."""
        t0 = time.perf_counter()
        if not self.frames:
            raise SetupError("the set-up phase got no frames")
        if self._reg is None:
            self._start()
        reference = (self._total / len(self.frames)).astype(np.float32)
        shifts = np.array(self._shifts, np.float64)
        report: dict[str, Any] = {"frames": len(self.frames), "day": self.day,
                                  "shift_sd_px": [float(v) for v in np.std(shifts, axis=0)]}
        if chosen is not None:
            rois = chosen
            report["method"] = "console"
        elif self.later:
            assert self.previous is not None
            rois = self._align(reference, report)
        else:
            rois = self._day_one(reference, suggest, report)
        self._check(rois, reference)
        report["rois"] = len(rois)
        report["groups"] = {g: [r.name for r in rois if r.group == g] for g in dict.fromkeys(rois.groups)}
        report["seconds"] = time.perf_counter() - t0
        return Setup(rois=rois.to_arrays(), reference=reference, truth_fields=dict(DEFAULT_TRUTH_FIELDS),
                     report=report)

    def _align(self, reference: np.ndarray, report: dict[str, Any]) -> RoiSet:
        from bcirig.processing.registration import align_fov

        prev = self.previous
        assert prev is not None
        cfg = self.protocol.setup
        plane = self.protocol.imaging.bci_plane
        if prev.reference.shape != reference.shape:
            raise SetupError(f"day {prev.day}'s reference is {prev.reference.shape}, today's frames {reference.shape}: "
                             "not the same imaging settings; start the ROIs afresh (--fresh)")
        dy, dx, quality = align_fov(reference, prev.reference, plane=plane, max_shift_px=cfg.max_alignment_px)
        report.update(method=LaterDays.PREVIOUS, previous_day=prev.day, previous_folder=prev.folder,
                      fov_offset_px=[float(dy), float(dx)], alignment_quality=float(quality))
        if not quality >= cfg.min_alignment_quality:
            raise SetupError(
                f"today's field of view matches day {prev.day}'s only with quality {quality:.2f} (offset "
                f"{dy:+.1f}, {dx:+.1f} px) < setup.min_alignment_quality = {cfg.min_alignment_quality}: is it "
                "the same field? Adjust the field and run again, or start the ROIs afresh with --fresh")
        return prev.rois.moved(dy, dx)

    def _day_one(self, reference: np.ndarray, suggest: Any, report: dict[str, Any]) -> RoiSet:
        choice = self.choice
        report["method"] = choice.method
        plane = self.protocol.imaging.bci_plane
        if choice.method == RoiMethod.DETECT:
            return self._detect(suggest, report)
        from bcirig.processing import roi_files

        if not choice.path:
            raise SetupError(f"setup.rois = '{choice.method}' needs a file: setup.roi_file or --rois")
        try:
            if choice.method == RoiMethod.FILE:
                rois = roi_files.load_rois(choice.path)
            elif choice.method == RoiMethod.IMAGEJ:
                rois = roi_files.load_imagej_rois(choice.path, plane=plane)
            elif choice.method == RoiMethod.SUITE2P:
                rois = roi_files.load_suite2p(choice.path, allow_pickle=choice.allow_pickle, plane=plane)
            else:
                raise SetupError(f"setup.rois = '{choice.method}' needs a simulated rig and is decided elsewhere")
        except (OSError, RoiError, ValueError) as exc:
            raise SetupError(f"ROIs from {choice.path}: {exc}") from None
        report["roi_file"] = choice.path
        if choice.choose:
            rois = _pick(list(rois), choice.choose, f"the {len(rois)} ROIs of {choice.path}")
            report["chosen"] = choice.choose
        return rois

    def _detect(self, suggest: Any, report: dict[str, Any]) -> RoiSet:
        from bcirig.processing.detection import choose_groups, detect_candidates

        img = self.protocol.imaging
        radius = self.protocol.setup.cell_radius_px or max(3.0, min(img.height, img.width) / 64)
        images = {p: (acc.mean_image(), acc.correlation_image()) for p, acc in self._summaries.items()}
        report["summary_frames"] = self._summaries[img.bci_plane].count
        dplane = _dendrite_plane(self.protocol)
        mean, corr = images[img.bci_plane]
        candidates = detect_candidates(mean, corr, cell_radius_px=radius, plane=img.bci_plane)
        report.update(candidates=len(candidates), cell_radius_px=radius)
        groups = self.choice.choose
        if not groups and suggest is not None:
            groups, score = suggest(candidates)
            report["operator"] = "simulated"
            report["detection_score"] = score
        if not groups:
            best = ", ".join(f"{c.rank}: ({c.centroid_yx[0]:.0f}, {c.centroid_yx[1]:.0f})" for c in candidates[:12])
            raise SetupError(f"{len(candidates)} ROI candidates were detected; choose the groups by candidate index "
                             f"with --choose 'P+=0,2 P-=1,3' or [setup] choose (best first, (y, x): {best} ...)")
        report["chosen"] = groups
        try:
            rois = choose_groups(candidates, groups, plane=img.bci_plane)
        except RoiError as exc:
            raise SetupError(f"choosing ROI candidates: {exc}") from None
        if dplane is not None:
            rois = _with_dendrites(rois, images[dplane], radius, dplane, report)
        return rois

    def _check(self, rois: RoiSet, reference: np.ndarray) -> None:
        """The ROIs must fit the frame and give the protocol's decoder the groups it needs."""
        from bcirig.processing.decoders import make_decoder

        try:
            rois.validate(self.shape)
            make_decoder(self.protocol, rois)
        except (RoiError, ValueError) as exc:
            raise SetupError(f"the set-up's ROIs cannot be used: {exc}") from None


def _dendrite_plane(protocol: Protocol) -> int | None:
    img = protocol.imaging
    if not protocol.rois.dendrites or img.planes < 2:
        return None
    return img.bci_plane - 1 if img.bci_plane > 0 else img.bci_plane + 1


def _pick(rois: list[Roi], choose: dict[str, list[int]], what: str) -> RoiSet:
    """ROIs chosen by index into groups, renamed group + k."""
    import dataclasses

    used: set[int] = set()
    out = []
    for group, indices in choose.items():
        for k, i in enumerate(indices):
            if not 0 <= i < len(rois) or i in used:
                raise SetupError(f"--choose {group}: index {i} is out of range or used twice ({what})")
            used.add(i)
            out.append(dataclasses.replace(rois[i], name=f"{group}{k}", group=group))
    return RoiSet(out)


def _with_dendrites(rois: RoiSet, images: tuple[np.ndarray, np.ndarray], radius: float, plane: int,
                    report: dict[str, Any]) -> RoiSet:
    """Each chosen soma's apical dendrite: the dendrite-plane candidate nearest above it (within 2 radii)."""
    import dataclasses

    from bcirig.processing.detection import detect_candidates

    mean, corr = images
    candidates = detect_candidates(mean, corr, cell_radius_px=max(1.0, 0.6 * radius), plane=plane)
    taken: set[int] = set()
    out = list(rois)
    missing = []
    for soma in rois:
        sy, sx = soma.centroid_yx
        best, best_d = -1, 2.0 * radius
        for c in candidates:
            cy, cx = c.centroid_yx
            d = float(np.hypot(cy - sy, cx - sx))
            if c.rank not in taken and d <= best_d:
                best, best_d = c.rank, d
        if best < 0:
            missing.append(soma.name)
            continue
        taken.add(best)
        out.append(dataclasses.replace(candidates[best].roi, name=f"{soma.name}d", group=soma.group,
                                       kind=RoiKind.DENDRITE, parent=soma.name))
    report["dendrites_missing"] = missing
    return RoiSet(out)
