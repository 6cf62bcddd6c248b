"""Image primitives shared by the rain generators (numpy + scipy.ndimage only, float32)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage


def uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return float(rng.uniform(lo, hi))


def randint(rng: np.random.Generator, lo_hi: tuple[int, int]) -> int:
    """An integer in [lo, hi], both ends included."""
    lo, hi = lo_hi
    return int(rng.integers(lo, hi + 1))


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def luma(img: np.ndarray) -> np.ndarray:
    return img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur over the two spatial axes (any trailing channel axis is left alone)."""
    if sigma <= 0:
        return img
    sig = (sigma, sigma) + (0,) * (img.ndim - 2)
    return ndimage.gaussian_filter(img, sig, mode="reflect", truncate=3.0)


def screen(base: np.ndarray, layer: np.ndarray) -> np.ndarray:
    return 1.0 - (1.0 - base) * (1.0 - layer)


def line_kernel(length: float, angle_deg: float) -> np.ndarray:
    """Anti-aliased motion-blur line, ``angle_deg`` from vertical (positive leans right going down).

    Sums to 1. The ends taper a little: a falling drop's streak fades at both ends on film.
    """
    half = length / 2.0
    r = int(np.ceil(half)) + 2
    y, x = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float32)
    a = np.deg2rad(angle_deg)
    dy, dx = np.cos(a), np.sin(a)
    along = y * dy + x * dx
    across = x * dy - y * dx
    w = np.clip(1.0 - np.abs(across), 0, 1) * np.clip(half + 0.5 - np.abs(along), 0, 1)
    w *= 1.0 - 0.5 * np.clip(along / half, -1, 1) ** 2
    return (w / w.sum()).astype(np.float32)


@lru_cache(maxsize=16)
def _freq2(shape: tuple[int, int]) -> np.ndarray:
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    return (fx * fx + fy * fy).astype(np.float32)


def motion_blur(field: np.ndarray, length: float, angle_deg: float, sigma: float = 0.0) -> tuple[np.ndarray, float]:
    """Convolve a single-channel field with a line kernel (and a Gaussian of ``sigma``) by FFT.

    The field wraps around, which suits noise layers (no darkened borders). Returns the blurred field
    and the peak response to a unit impulse, so callers can normalise an isolated streak to 1.
    """
    h, w = field.shape
    k = line_kernel(length, angle_deg)
    kh, kw = k.shape
    if kh > h or kw > w:
        raise ValueError(f"streak length {length:.0f} px does not fit a {w}x{h} image")
    pad = np.zeros((h, w), np.float32)
    pad[:kh, :kw] = k
    pad = np.roll(pad, (-(kh // 2), -(kw // 2)), axis=(0, 1))
    spec = np.fft.rfft2(pad)
    if sigma > 0:
        spec *= np.exp(-2.0 * np.pi**2 * sigma**2 * _freq2((h, w)))
    out = np.fft.irfft2(np.fft.rfft2(field) * spec, s=(h, w)).astype(np.float32)
    peak = float(blur(np.pad(k, 4), sigma).max()) if sigma > 0 else float(k.max())
    return out, peak


def _dist2(shape: tuple[int, int], cy: float, cx: float, scale: float) -> np.ndarray:
    y = (np.arange(shape[0], dtype=np.float32) - np.float32(cy)) / np.float32(scale)
    x = (np.arange(shape[1], dtype=np.float32) - np.float32(cx)) / np.float32(scale)
    return (y * y)[:, None] + (x * x)[None, :]


def radial_falloff(shape: tuple[int, int], cy: float, cx: float, radius: float, power: int = 2) -> np.ndarray:
    """1 / (1 + (d / radius)^power), power 2 or 3: the soft, long-tailed falloff of a point light."""
    d2 = _dist2(shape, cy, cx, radius)
    if power == 3:
        d2 *= np.sqrt(d2)
    elif power != 2:
        raise ValueError("power must be 2 or 3")
    return 1.0 / (1.0 + d2)


def gaussian_spot(shape: tuple[int, int], cy: float, cx: float, sigma: float) -> np.ndarray:
    """A separable Gaussian bump: two 1-D exponentials and an outer product."""
    y = np.arange(shape[0], dtype=np.float32) - np.float32(cy)
    x = np.arange(shape[1], dtype=np.float32) - np.float32(cx)
    k = np.float32(-0.5 / (sigma * sigma))
    return np.exp(k * y * y)[:, None] * np.exp(k * x * x)[None, :]
