"""Where the simulated neurons are: soma and dendrite footprints, the static image, the true ROIs.

A *source* is something that fluoresces with its own calcium: an imaged soma (one network unit) or the
apical dendrite of a BCI unit. Each source has a footprint, a sparse set of pixels with weights in
[0, 1]; the frame is the static image plus, for every source, ``footprint * extra brightness``.
Geometry depends only on the mouse's anatomy seed, so it is identical on every day.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bcirig.config import Protocol
from bcirig.processing.rois import RoiKind
from bcirig.schema import ConfigError
from bcirig.sim.config import SimConfig


@dataclass(frozen=True)
class Source:
    """One fluorescent source: which unit drives it, kind, plane, centre, radius, resting brightness."""

    unit: int
    kind: RoiKind
    plane: int
    cy: float
    cx: float
    radius: float
    rest_counts: float
    name: str = ""  # ROI name for BCI somata / dendrites, "" for other imaged neurons
    group: str = "none"
    parent: str = ""


def soma_radius(cfg: SimConfig, height: int, width: int) -> float:
    """Soma radius in pixels: configured, or about 1/64 of the frame side (>= 3 px)."""
    return cfg.soma_radius_px or max(3.0, round(min(height, width) / 64))


def motion_margin(cfg: SimConfig) -> int:
    """Largest rigid shift (px) the simulator produces, the day's field offset included; footprints stay this
    far inside the frame."""
    return max(1, math.ceil(3 * cfg.motion_px + 2 * cfg.lick_jitter_px + cfg.fov_shift_px))


def fov_offset(cfg: SimConfig, seed: int, day: int) -> tuple[int, int]:
    """The field of view's offset on training ``day`` relative to day 1 (whole px; ground truth)."""
    if day <= 1 or cfg.fov_shift_px <= 0:
        return 0, 0
    dy, dx = np.random.default_rng([seed, 7, day]).uniform(-cfg.fov_shift_px, cfg.fov_shift_px, 2)
    return round(float(dy)), round(float(dx))


def dendrite_plane(protocol: Protocol) -> int | None:
    """The plane imaging the BCI units' apical dendrites (the plane above), or None with one plane."""
    im = protocol.imaging
    if im.planes < 2:
        return None
    return im.bci_plane - 1 if im.bci_plane > 0 else im.bci_plane + 1


def place_sources(protocol: Protocol, cfg: SimConfig, n_bci: int, n_units: int, seed: int) -> list[Source]:
    """Lay out BCI somata (+ dendrites) and other imaged neurons, non-overlapping, inside the margins."""
    rng = np.random.default_rng([seed, 3])
    im = protocol.imaging
    r = soma_radius(cfg, im.height, im.width)
    margin = motion_margin(cfg) + r + 1
    roi_margin = margin + protocol.readout.neuropil_outer_px
    taken: dict[int, list[tuple[float, float]]] = {p: [] for p in range(im.planes)}

    def spot(plane: int, edge: float, min_dist: float) -> tuple[float, float] | None:
        for _ in range(2000):
            cy = rng.uniform(edge, im.height - 1 - edge)
            cx = rng.uniform(edge, im.width - 1 - edge)
            if all((cy - y) ** 2 + (cx - x) ** 2 >= min_dist**2 for y, x in taken[plane]):
                taken[plane].append((cy, cx))
                return cy, cx
        return None  # the frame is full

    sources: list[Source] = []
    groups = protocol.rois.groups
    names = [f"{g}{i}" for g, c in groups.items() for i in range(int(c))]
    group_of = [g for g, c in groups.items() for _ in range(int(c))]
    edge = min(roi_margin, (min(im.height, im.width) - 1) / 2 - 1)
    for u in range(n_bci):
        found = spot(im.bci_plane, edge, 3.0 * r)
        if found is None:  # the protocol asks for more ROIs than this field of view holds
            raise ConfigError(
                protocol.source_path or "<protocol>", "rois.groups", dict(groups),
                f"no more BCI neurons than the simulated {im.height}x{im.width} field holds: {u} of {n_bci} "
                f"somata of radius {r:g} px placed, {3 * r:g} px apart and {edge:g} px from the edges; use "
                "fewer ROIs, a larger imaging.height and width, or a smaller simulation.soma_radius_px",
            )
        cy, cx = found
        sources.append(Source(u, RoiKind.SOMA, im.bci_plane, cy, cx, r, cfg.soma_counts, names[u], group_of[u]))
    dplane = dendrite_plane(protocol)
    if dplane is not None:
        for u in range(n_bci):
            s = sources[u]
            cy, cx = s.cy + rng.uniform(-r, r), s.cx + rng.uniform(-r, r)
            cy = float(np.clip(cy, edge, im.height - 1 - edge))
            cx = float(np.clip(cx, edge, im.width - 1 - edge))
            taken[dplane].append((cy, cx))
            sources.append(Source(u, RoiKind.DENDRITE, dplane, cy, cx, 0.6 * r, cfg.dendrite_counts,
                                  f"{s.name}d", s.group, s.name))
    others = rng.permutation(np.arange(n_bci, n_units))
    k = 0
    for plane in range(im.planes):
        for _ in range(cfg.imaged_neurons):
            if k >= len(others):
                break
            found = spot(plane, margin, 2.2 * r)
            if found is None:
                break  # the frame is full: fewer other neurons, never an error
            cy, cx = found
            sources.append(Source(int(others[k]), RoiKind.SOMA, plane, cy, cx, r, cfg.soma_counts))
            k += 1
    return sources


def footprint(src: Source) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels (y, x) and weights of a source: an anti-aliased disk; somata have a dimmer nucleus."""
    r = src.radius
    ys = np.arange(math.floor(src.cy - r - 1), math.ceil(src.cy + r + 1) + 1)
    xs = np.arange(math.floor(src.cx - r - 1), math.ceil(src.cx + r + 1) + 1)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    d = np.hypot(yy - src.cy, xx - src.cx)
    w = np.clip(r + 0.5 - d, 0.0, 1.0)
    if src.kind == RoiKind.SOMA:
        w = np.where(d < 0.5 * r, 0.6 * w, w)  # GCaMP is cytosolic: the nucleus is dimmer
    keep = w > 0
    return yy[keep].astype(np.int64), xx[keep].astype(np.int64), w[keep]


def background(protocol: Protocol, cfg: SimConfig, seed: int, pad: int) -> np.ndarray:
    """Static textured background (tissue, neuropil, dim unimaged cells), (planes, H + 2 pad, W + 2 pad)."""
    rng = np.random.default_rng([seed, 4])
    im = protocol.imaging
    shape = (im.planes, im.height + 2 * pad, im.width + 2 * pad)
    noise = rng.standard_normal(shape)
    # Smooth texture (about a soma across): the registration needs structure to lock on to.
    ky = np.fft.fftfreq(shape[1])[:, None]
    kx = np.fft.fftfreq(shape[2])[None, :]
    sigma = soma_radius(cfg, im.height, im.width) / (2 * math.pi)
    kernel = np.exp(-2 * (math.pi * sigma) ** 2 * (ky**2 + kx**2)) / max(sigma, 1e-9)
    tex = np.fft.irfft2(np.fft.rfft2(noise) * kernel[:, : shape[2] // 2 + 1], s=shape[1:])
    tex /= max(float(tex.std()), 1e-12)
    img = cfg.background_counts * np.clip(1.0 + 0.25 * tex, 0.3, None)
    # Dim cells that are never imaged as ROIs: more texture, like a real field of view.
    r = soma_radius(cfg, im.height, im.width)
    n_dim = int(im.height * im.width / (16 * r * r))
    for p in range(im.planes):
        for _ in range(n_dim):
            src = Source(-1, RoiKind.SOMA, p, rng.uniform(0, shape[1] - 1), rng.uniform(0, shape[2] - 1), r, 0.0)
            y, x, w = footprint(src)
            ok = (y >= 0) & (y < shape[1]) & (x >= 0) & (x < shape[2])
            img[p, y[ok], x[ok]] += 0.3 * cfg.soma_counts * w[ok]
    return img.astype(np.float32)
