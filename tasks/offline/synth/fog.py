"""Fog and haze by the atmospheric scattering model, as RESIDE (Li et al.) builds its hazy sets:

    I = J · t + A · (1 − t),    t = exp(−β · d)

J is the clean photo, A the airlight (bright, near-grey, randomly tinted), β the density and d the
scene depth. RESIDE takes d from a depth estimator; without one, d is built from what a photo says
about depth on its own: height in the frame (the top is usually farther: sky, horizon) and luminance
(bright, low-contrast regions near the top are usually sky, i.e. far), smoothed so edges of objects do
not print into the haze. Depth lies in [0, 1] with a random near/far range; β and A are drawn per
image. The target is the clean photo.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import RainPair, check_profile, register_rain
from .ops import blur, luma, uniform


@dataclass(frozen=True)
class FogRanges:
    beta: tuple[float, float]         # density (per unit depth)
    airlight: tuple[float, float]     # A, before its tint
    tint: float                       # per-channel deviation of A
    horizon: tuple[float, float]      # where depth stops growing, fraction of the height from the top
    lum_weight: tuple[float, float]   # how much luminance adds to the depth
    near: tuple[float, float]         # depth at the bottom of the frame


PAIRED = FogRanges(beta=(0.8, 2.6), airlight=(0.7, 1.0), tint=0.03, horizon=(0.15, 0.5), lum_weight=(0.1, 0.4),
                   near=(0.0, 0.25))
# The stand-in gallery: thinner, bluer-grey haze with a higher horizon.
GALLERY = FogRanges(beta=(0.5, 2.0), airlight=(0.65, 0.95), tint=0.05, horizon=(0.1, 0.35), lum_weight=(0.2, 0.5),
                    near=(0.05, 0.3))
RANGES = {"paired": PAIRED, "gallery": GALLERY}


def plausible_depth(clean: np.ndarray, rng: np.random.Generator, r: FogRanges) -> np.ndarray:
    """d in [near, 1]: grows from the bottom of the frame to the horizon, plus bright-smooth regions."""
    h, w = clean.shape[:2]
    horizon = uniform(rng, r.horizon)
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]  # 0 = top
    by_row = np.clip((1.0 - y) / max(1e-3, 1.0 - horizon), 0.0, 1.0) ** 1.5  # 1 above the horizon
    lum = blur(luma(clean), max(h, w) / 24)  # smoothed: haze follows regions, not texture
    lum = (lum - lum.min()) / max(1e-6, float(lum.max() - lum.min()))
    depth = by_row + np.float32(uniform(rng, r.lum_weight)) * lum * (1.0 - y)  # bright and high: far
    depth = blur(np.broadcast_to(depth, (h, w)).astype(np.float32), max(h, w) / 32)
    depth = (depth - depth.min()) / max(1e-6, float(depth.max() - depth.min()))
    near = np.float32(uniform(rng, r.near))
    return near + (1.0 - near) * depth


def scatter(clean: np.ndarray, depth: np.ndarray, beta: float, airlight: np.ndarray) -> np.ndarray:
    """I = J·t + A·(1 − t) with t = exp(−β·d)."""
    t = np.exp(-np.float32(beta) * depth)[..., None]
    return clean * t + np.asarray(airlight, np.float32) * (1.0 - t)


def add_fog(clean: np.ndarray, rng: np.random.Generator, r: FogRanges) -> np.ndarray:
    depth = plausible_depth(clean, rng, r)
    beta = uniform(rng, r.beta)
    a = np.float32(uniform(rng, r.airlight)) + rng.uniform(-r.tint, r.tint, 3).astype(np.float32)
    return scatter(clean, depth, beta, np.clip(a, 0.0, 1.0))


@register_rain("fog")
def fog(clean: np.ndarray, rng: np.random.Generator, profile: str = "paired") -> RainPair:
    check_profile(profile)
    return RainPair(np.clip(add_fog(clean, rng, RANGES[profile]), 0.0, 1.0).astype(np.float32), clean)
