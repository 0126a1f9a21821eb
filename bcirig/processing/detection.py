"""Automatic soma candidates from registered frames: summary images, detection, ranking, groups, scoring.

A stage in the project's sense: plain functions and one accumulator, no sockets, threads or clock,
deterministic (no random numbers anywhere).

1. **Summary images** of the registered frames of one plane (:class:`SummaryImages`, frame by frame
   or chunk by chunk, so a long recording is never held in memory): the mean image, and the *local
   correlation image*, the mean Pearson correlation of each pixel's time course with those of its
   8 neighbours (Smith & Häusser 2010) after the frame-mean time course is regressed out. A soma
   whose calcium goes up and down lights up in the correlation image however dim it is at rest; the
   mean image shows active and quiet somata alike.
2. **Detection** (:func:`detect_candidates`). Both images are band-passed at the soma scale (a
   difference of Gaussians, sigma ``r / 2`` minus ``2 r`` for the cell radius ``r``; the mean image
   is divided by its local brightness first, so an unevenly lit field is treated evenly) and turned
   into robust z-scores over the field (median, 1.4826 MAD): ``z_corr`` and ``z_mean``. Seeds are the
   local maxima of ``evidence = z_corr + z_mean`` at least ``r`` apart. A seed is a candidate if it is
   *active* (``z_corr >= min_corr_z``, default 3: the correlation image of pixels without a signal of
   their own is noise around 0, and its band-passed peaks stay below ~1.5 z) or *bright*
   (``z_mean >= min_mean_z``, default 6). Each candidate's mask is grown by a watershed of the lightly
   smoothed evidence from all candidates at once (touching cells are split where they meet), kept
   where it is above half the seed's height over its surroundings (the median over 1.5 r to 2.5 r),
   within 1.5 r of the seed, hole-filled, and reduced to the connected piece holding the seed.
   Candidates are ranked by ``score = evidence at the seed``, best first: a bright active soma ranks
   above a quiet one or a dim flicker.
3. **Groups** (:func:`choose_groups`): the operator picks candidates by rank into named groups
   (``{"P+": [0, 3], "P-": [1, 2]}``), which become the session's :class:`~bcirig.processing.rois.RoiSet`.
4. **Scoring** (:func:`match_rois`): detected ROIs against true ones by mask intersection over union
   (one-to-one, best pairs first), giving recall and precision.

On the simulated mouse (``tests/processing/test_detection.py``: 600 registered frames at rest, 48
somata on the BCI plane, scored at IoU >= 0.5 against the simulator's disk ROIs): the active somata
are found from the correlation image with nothing else above the ``min_corr_z`` line. Somata that
stay silent for the whole recording (3-5 of the 48) can only be found in the mean image, where the
simulator's background also holds dim unimaged cells that overlap into blobs as bright as a quiet
soma. On the default 512 x 796 field (radius 8 px) such blobs reach ``z_mean`` 5-6.6, hence the
default of 6 (recall 0.96-1.0, precision 0.96-1.0 over 6 mice; 0.2 s); on a 128 x 128 field
(radius 3 px) they stay below ~4, and ``min_mean_z = 4`` lists the quiet somata too (recall
0.92-0.98, precision 0.96-1.0 over 10 mice). A longer recording (a whole baseline) makes weakly
active somata clear in the correlation image; a soma that never fires is not a useful BCI neuron.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi

from bcirig.processing.rois import Roi, RoiError, RoiSet

# The 4 "forward" neighbour offsets; with their mirror images they are the 8 neighbours of a pixel.
_OFFSETS = ((0, 1), (1, -1), (1, 0), (1, 1))


def _pair_slices(dy: int, dx: int, height: int, width: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Slices ``a`` and ``b`` such that ``img[b]`` is ``img[a]``'s neighbour at offset (dy, dx)."""
    ya, yb = slice(0, height - dy), slice(dy, height)
    if dx >= 0:
        xa, xb = slice(0, width - dx), slice(dx, width)
    else:
        xa, xb = slice(-dx, width), slice(0, width + dx)
    return (ya, xa), (yb, xb)


class SummaryImages:
    """Running mean and local-correlation image of one plane's registered frames.

    With ``regress_global`` (the default) the frame-mean time course ``g(t)`` is regressed out of
    every pixel before correlating (the partial correlation given ``g``). A global brightness change
    (bleaching, drift, laser power, neuropil that scales the whole field) otherwise correlates every
    bright pixel with its neighbours, so static bright structure such as silent cells' resting
    fluorescence would look active; on the simulated field it raised the correlation of unrelated
    bright blobs to that of weakly active somata.

    Memory: 8 float64 images (running sums of x, x^2, x g and the 4 neighbour products, and the first
    frame, subtracted from every frame so float64 keeps the variances exact), i.e. 64 bytes per
    pixel (26 MB for 512 x 796), plus the float64 copy of the chunk being added (8 bytes per pixel
    per frame of the chunk).
    """

    def __init__(self, height: int, width: int, *, regress_global: bool = True) -> None:
        self.shape = (int(height), int(width))
        self.regress_global = bool(regress_global)
        self.count = 0
        self._offset = np.zeros(self.shape)
        self._s1 = np.zeros(self.shape)
        self._s2 = np.zeros(self.shape)
        self._sxg = np.zeros(self.shape)
        self._sg = 0.0
        self._sgg = 0.0
        self._pairs = [np.zeros((height - dy, width - abs(dx))) for dy, dx in _OFFSETS]

    def add(self, frames: np.ndarray) -> None:
        """Add one registered plane (H, W) or a chunk of them (T, H, W), any real dtype."""
        x = np.asarray(frames)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[1:] != self.shape:
            raise ValueError(f"frames must be (T, {self.shape[0]}, {self.shape[1]}) or one plane, got {x.shape}")
        if len(x) == 0:
            return
        if not np.all(np.isfinite(x)):
            raise ValueError("frames contain NaN or infinite values")
        if self.count == 0:
            self._offset = x[0].astype(np.float64)
        d = x.astype(np.float64) - self._offset
        self._s1 += d.sum(0)
        self._s2 += np.einsum("tij,tij->ij", d, d)
        g = d.mean(axis=(1, 2))
        self._sxg += np.tensordot(g, d, axes=1)
        self._sg += float(g.sum())
        self._sgg += float(g @ g)
        h, w = self.shape
        for acc, (dy, dx) in zip(self._pairs, _OFFSETS, strict=True):
            a, b = _pair_slices(dy, dx, h, w)
            acc += np.einsum("tij,tij->ij", d[:, a[0], a[1]], d[:, b[0], b[1]])
        self.count += len(x)

    def mean_image(self) -> np.ndarray:
        """Mean of the frames added (float64, H x W)."""
        if self.count == 0:
            raise ValueError("no frames added")
        return self._offset + self._s1 / self.count

    def correlation_image(self) -> np.ndarray:
        """Mean correlation of each pixel with its 8 neighbours (fewer at the edges); 0 where a pixel
        or all its neighbours never change (float64, H x W, values in [-1, 1])."""
        if self.count < 2:
            raise ValueError("the correlation image needs at least 2 frames")
        n, (h, w) = self.count, self.shape
        m = self._s1 / n
        var = self._s2 / n - m * m
        mg = self._sg / n
        var_g = self._sgg / n - mg * mg
        regress = self.regress_global and var_g > 0
        cxg = self._sxg / n - m * mg if regress else np.zeros(self.shape)
        if regress:
            residual = var - cxg * cxg / var_g
            var = np.where(residual > 1e-9 * var, residual, 0.0)  # a pixel that only follows g: no own signal
        sd = np.sqrt(np.maximum(var, 0.0))
        total = np.zeros(self.shape)
        neighbours = np.zeros(self.shape)
        for acc, (dy, dx) in zip(self._pairs, _OFFSETS, strict=True):
            a, b = _pair_slices(dy, dx, h, w)
            cov = acc / n - m[a] * m[b]
            if regress:
                cov = cov - cxg[a] * cxg[b] / var_g
            den = sd[a] * sd[b]
            r = np.divide(cov, den, out=np.zeros_like(cov), where=den > 0)
            total[a] += r
            total[b] += r
            neighbours[a] += 1
            neighbours[b] += 1
        mean_r = np.divide(total, neighbours, out=np.zeros(self.shape), where=neighbours > 0)
        return np.clip(mean_r, -1.0, 1.0)


def local_correlation_image(frames: np.ndarray, *, regress_global: bool = True, chunk_frames: int = 32) -> np.ndarray:
    """Mean correlation of each pixel's time course with its 8 neighbours, for frames (T, H, W).

    With ``regress_global`` the frame-mean time course is first regressed out of every pixel (see
    :class:`SummaryImages`). Vectorised over pixels and processed ``chunk_frames`` frames at a time:
    besides the input, memory is 64 bytes per pixel plus 8 bytes per pixel per chunk frame (about
    130 MB for 512 x 796 pixels and 32-frame chunks), whatever ``T``.
    """
    x = np.asarray(frames)
    if x.ndim != 3:
        raise ValueError(f"frames must be (T, H, W), got shape {x.shape}")
    acc = SummaryImages(x.shape[1], x.shape[2], regress_global=regress_global)
    for start in range(0, len(x), max(1, chunk_frames)):
        acc.add(x[start:start + max(1, chunk_frames)])
    return acc.correlation_image()


# ---------------------------------------------------------------------------------------------- detection
@dataclass(frozen=True)
class Candidate:
    """One candidate soma: rank, mask ROI, centroid, area, ranking score and the two evidences."""

    rank: int
    roi: Roi  # weight-1 mask, named ``c<rank>``, group "none"
    score: float  # z_corr + z_mean at the seed: the ranking key
    z_corr: float  # band-passed correlation image at the seed, robust z-score
    z_mean: float  # band-passed relative mean-image contrast at the seed, robust z-score

    @property
    def centroid_yx(self) -> tuple[float, float]:
        """Centre of mass of the mask (y, x)."""
        return self.roi.centroid_yx

    @property
    def area(self) -> int:
        """Number of pixels in the mask."""
        return self.roi.npix


def _robust_z(img: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(img - median) / (1.4826 MAD), statistics over the ``valid`` pixels."""
    vals = img[valid]
    med = float(np.median(vals))
    mad = 1.4826 * float(np.median(np.abs(vals - med)))
    if not mad > 0:
        mad = float(vals.std()) or 1.0
    return (img - med) / mad


def _band(img: np.ndarray, r: float) -> np.ndarray:
    """Difference of Gaussians at the soma scale: sigma r/2 minus sigma 2r (edges reflected)."""
    return np.asarray(ndi.gaussian_filter(img, r / 2, mode="reflect") - ndi.gaussian_filter(img, 2 * r, mode="reflect"))


def evidence_images(
    mean_image: np.ndarray, corr_image: np.ndarray, cell_radius_px: float, border_px: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Robust z-scores (z_corr, z_mean) of the band-passed correlation and relative mean images."""
    mean = np.asarray(mean_image, np.float64)
    corr = np.asarray(corr_image, np.float64)
    if mean.ndim != 2 or mean.shape != corr.shape:
        raise ValueError(f"mean and correlation images must be 2-D and alike, got {mean.shape} and {corr.shape}")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(corr))):
        raise ValueError("the mean or correlation image contains NaN or infinite values")
    r = float(cell_radius_px)
    local = ndi.gaussian_filter(mean, 2 * r, mode="reflect")
    floor = max(float(np.percentile(np.abs(local), 1)), 1e-12)
    rel = _band(mean, r) / np.maximum(np.abs(local), floor)
    valid = np.zeros(mean.shape, bool)
    b = max(0, int(border_px))
    valid[b:mean.shape[0] - b, b:mean.shape[1] - b] = True
    if not valid.any():
        valid[...] = True
    return _robust_z(_band(corr, r), valid), _robust_z(rel, valid)


def detect_candidates(
    mean_image: np.ndarray, corr_image: np.ndarray, *, cell_radius_px: float, max_candidates: int = 200,
    min_corr_z: float = 3.0, min_mean_z: float = 6.0, border_px: int | None = None, plane: int = 0,
) -> list[Candidate]:
    """Candidate somata of one plane, ranked best first (the method is in the module docstring).

    ``mean_image`` and ``corr_image`` are (H, W) summary images of the same registered frames
    (:class:`SummaryImages`); ``cell_radius_px`` is the typical soma radius. A seed is a candidate if
    it is *active* (``z_corr >= min_corr_z``) or *bright* (``z_mean >= min_mean_z``); at most
    ``max_candidates`` are returned. ``border_px`` (default: the radius rounded up) is the edge band
    where no seed is taken, as registration leaves the edges ragged; ``plane`` is given to the ROIs.
    Lower ``min_mean_z`` to also list quiet somata in a field with little bright clutter (the module
    docstring has the figures).
    """
    r = float(cell_radius_px)
    if not r >= 1.0:
        raise ValueError(f"cell_radius_px must be >= 1 px, got {cell_radius_px}")
    if max_candidates < 0:
        raise ValueError(f"max_candidates must be >= 0, got {max_candidates}")
    border = int(np.ceil(r)) if border_px is None else max(0, int(border_px))
    z_corr, z_mean = evidence_images(mean_image, corr_image, r, border)
    evidence = z_corr + z_mean
    seeds = _local_maxima(evidence, max(1, round(r)), border)
    ok = (z_corr[seeds[:, 0], seeds[:, 1]] >= min_corr_z) | (z_mean[seeds[:, 0], seeds[:, 1]] >= min_mean_z)
    seeds = seeds[ok]
    if not len(seeds) or max_candidates == 0:
        return []
    seeds = seeds[np.argsort(-evidence[seeds[:, 0], seeds[:, 1]], kind="stable")]
    out: list[Candidate] = []
    for (sy, sx), (ys, xs) in zip(seeds.tolist(), _grow(evidence, seeds, r), strict=True):
        if len(ys) == 0:
            continue
        rank = len(out)
        roi = Roi(name=f"c{rank}", plane=int(plane), y=ys.astype(np.int32), x=xs.astype(np.int32),
                  w=np.ones(len(ys), np.float32))
        out.append(Candidate(rank=rank, roi=roi, score=float(evidence[sy, sx]),
                             z_corr=float(z_corr[sy, sx]), z_mean=float(z_mean[sy, sx])))
        if len(out) >= max_candidates:
            break
    return out


def _local_maxima(img: np.ndarray, min_distance: int, border: int) -> np.ndarray:
    """(y, x) of the local maxima of ``img`` at least ``min_distance`` apart and outside ``border``."""
    from skimage.feature import peak_local_max

    peaks = peak_local_max(img, min_distance=min_distance, exclude_border=border if border > 0 else False)
    return np.asarray(peaks, np.intp).reshape(-1, 2)


def _grow(evidence: np.ndarray, seeds: np.ndarray, r: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Mask pixels (y, x) of each seed: watershed basin ∩ disk(1.5 r) ∩ above half height, filled.

    Half height: halfway between the smoothed evidence at the seed and its surroundings, the median
    over the ring 1.5 r < distance <= 2.5 r around the seed."""
    from skimage.segmentation import watershed

    smooth = ndi.gaussian_filter(evidence, max(0.5, r / 4), mode="reflect")
    height, width = smooth.shape
    markers = np.zeros(smooth.shape, np.int32)
    markers[seeds[:, 0], seeds[:, 1]] = np.arange(1, len(seeds) + 1)
    labels = watershed(-smooth, markers)
    reach, ring = 1.5 * r, 2.5 * r
    pad = int(np.ceil(ring)) + 1
    out = []
    for k, (sy, sx) in enumerate(seeds.tolist(), start=1):
        y0, y1 = max(0, sy - pad), min(height, sy + pad + 1)
        x0, x1 = max(0, sx - pad), min(width, sx + pad + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        d2 = (yy - sy) ** 2 + (xx - sx) ** 2
        win = smooth[y0:y1, x0:x1]
        around = win[(d2 > reach * reach) & (d2 <= ring * ring)]
        base = float(np.median(around)) if around.size else 0.0
        level = base + 0.5 * (float(smooth[sy, sx]) - base)
        keep = (labels[y0:y1, x0:x1] == k) & (d2 <= reach * reach) & (win >= level)
        keep = ndi.binary_fill_holes(keep)
        lab, _ = ndi.label(keep)
        piece = lab[sy - y0, sx - x0]
        if piece == 0:
            out.append((np.zeros(0, np.intp), np.zeros(0, np.intp)))
            continue
        ky, kx = np.nonzero(lab == piece)
        out.append((ky + y0, kx + x0))
    return out


# ---------------------------------------------------------------------------------------------- groups
def choose_groups(candidates: Sequence[Candidate], groups: Mapping[str, Sequence[int]], *, plane: int) -> RoiSet:
    """The ROI set of the chosen candidates: group ``g``'s k-th index becomes ROI ``f"{g}{k}"``.

    ``groups`` maps a group name to candidate ranks (indices into ``candidates``), e.g.
    ``{"P+": [0, 3, 5, 7], "P-": [1, 2, 4, 6]}``; RoiError for an index out of range or used twice.
    """
    used: dict[int, str] = {}
    rois = []
    for group, indices in groups.items():
        if not group:
            raise RoiError("a group needs a non-empty name")
        for k, raw in enumerate(indices):
            if isinstance(raw, bool) or not isinstance(raw, int | np.integer):
                raise RoiError(f"group {group!r}: candidate index {raw!r} is not a whole number")
            i = int(raw)
            if not 0 <= i < len(candidates):
                raise RoiError(
                    f"group {group!r}: candidate index {i} is out of range (there are {len(candidates)} "
                    f"candidates, 0..{len(candidates) - 1})"
                )
            if i in used:
                raise RoiError(f"candidate {i} is chosen twice: in group {used[i]!r} and in group {group!r}")
            used[i] = group
            rois.append(dataclasses.replace(candidates[i].roi, name=f"{group}{k}", group=group, plane=int(plane)))
    return RoiSet(rois)


# ---------------------------------------------------------------------------------------------- scoring
def _pixel_sets(rois: Iterable[Roi | Candidate]) -> list[tuple[int, set[tuple[int, int]]]]:
    out = []
    for item in rois:
        roi = item.roi if isinstance(item, Candidate) else item
        keep = roi.w > 0
        out.append((roi.plane, set(zip(roi.y[keep].tolist(), roi.x[keep].tolist(), strict=True))))
    return out


def match_rois(
    detected: Iterable[Roi | Candidate], truth: Iterable[Roi | Candidate], iou: float = 0.5
) -> tuple[float, float, list[tuple[int, int, float]]]:
    """Match detected ROIs to true ones one-to-one by mask IoU (pixels with weight > 0, same plane).

    Pairs with IoU >= ``iou`` are taken greedily, best IoU first. Returns ``(recall, precision,
    pairs)``: recall = matched / true, precision = matched / detected (1.0 for an empty side), pairs =
    ``(detected index, true index, IoU)`` sorted by detected index.
    """
    det, tru = _pixel_sets(detected), _pixel_sets(truth)
    scored = []
    for i, (pd, sd) in enumerate(det):
        for j, (pt, st) in enumerate(tru):
            if pd != pt:
                continue
            inter = len(sd & st)
            if inter == 0:
                continue
            value = inter / len(sd | st)
            if value >= iou:
                scored.append((value, i, j))
    scored.sort(key=lambda s: (-s[0], s[1], s[2]))
    taken_d: set[int] = set()
    taken_t: set[int] = set()
    pairs = []
    for value, i, j in scored:
        if i in taken_d or j in taken_t:
            continue
        taken_d.add(i)
        taken_t.add(j)
        pairs.append((i, j, value))
    pairs.sort()
    recall = len(pairs) / len(tru) if tru else 1.0
    precision = len(pairs) / len(det) if det else 1.0
    return recall, precision, pairs
