"""Helpers for the processing tests: small protocols and synthetic images."""

from __future__ import annotations

import numpy as np

from bcirig.config import Protocol, parse_protocol


def make_protocol(
    *, height: int = 64, width: int = 64, planes: int = 1, bci_plane: int = 0, dtype: str = "uint16",
    decoder: str = 'name = "two_population"', smoothing: str = 'kind = "none"',
    f0: str = 'kind = "percentile"\npercentile = 10.0\nwindow_frames = 50', registration: str = "enabled = false",
    readout: str = "neuropil_coefficient = 0.0\nneuropil_inner_px = 2.0\nneuropil_outer_px = 8.0",
    signal: str = "",
) -> Protocol:
    """A valid protocol with the given processing sections (TOML bodies)."""
    text = f"""
[protocol]
name = "t"
[imaging]
height = {height}
width = {width}
planes = {planes}
bci_plane = {bci_plane}
dtype = "{dtype}"
[registration]
{registration}
[readout]
{readout}
{signal}
[readout.f0]
{f0}
[readout.smoothing]
{smoothing}
[readout.decoder]
{decoder}
[trials]
length_frames = 20
grey_frames = 2
[baseline]
frames = 40
"""
    return parse_protocol(text, "test.toml")


def smooth_image(n: int, rng: np.random.Generator, sigma: float = 3.0) -> np.ndarray:
    """Random image low-passed by a Gaussian of ``sigma`` px, scaled to [0, 1]."""
    f = np.fft.fft2(rng.standard_normal((n, n)))
    k = np.fft.fftfreq(n)
    g = np.exp(-2 * (np.pi * sigma) ** 2 * (k[:, None] ** 2 + k[None, :] ** 2))
    img = np.fft.ifft2(f * g).real
    return np.asarray((img - img.min()) / (img.max() - img.min()), dtype=np.float64)


def fourier_shift(img: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """``img`` moved by (+dy, +dx) px (circularly), exact for band-limited images."""
    ky = np.fft.fftfreq(img.shape[0])[:, None]
    kx = np.fft.fftfreq(img.shape[1])[None, :]
    return np.fft.ifft2(np.fft.fft2(img) * np.exp(-2j * np.pi * (ky * dy + kx * dx))).real
