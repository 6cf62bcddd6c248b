"""Daytime rain streaks, after the Photoshop recipe behind Rain100/Rain13k-style sets:
sparse noise -> levels -> motion blur along a line -> several depth layers -> screen or alpha blend,
with an optional haze veil (rain accumulation) behind the streaks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .base import RainPair, check_profile, register_rain
from .ops import blur, motion_blur, randint, screen, uniform


@dataclass(frozen=True)
class StreakRanges:
    layers: tuple[int, int]          # depth layers, far to near
    angle: tuple[float, float]       # degrees from vertical, shared by all layers
    angle_jitter: float              # per-layer deviation, degrees
    length: tuple[float, float]      # nearest layer's streak length, px (farther layers are shorter)
    density: tuple[float, float]     # seeds per pixel in the farthest layer (nearer layers are sparser)
    width: tuple[float, float]       # Gaussian sigma of the nearest layer's drops, px
    black: tuple[float, float]       # levels: black point (raise to thin out faint streaks)
    opacity: tuple[float, float]
    p_screen: float                  # probability of screen blending (else alpha blending)
    p_haze: float
    haze: tuple[float, float]        # veil strength


PAIRED = StreakRanges(layers=(1, 3), angle=(-30.0, 30.0), angle_jitter=3.0, length=(14.0, 40.0),
                      density=(0.002, 0.009), width=(0.45, 1.4), black=(0.0, 0.15), opacity=(0.65, 1.0),
                      p_screen=0.5, p_haze=0.35, haze=(0.05, 0.25))
# The stand-in gallery: more layers, softer and more defocused streaks, more haze, tighter angles.
GALLERY = StreakRanges(layers=(2, 4), angle=(-20.0, 20.0), angle_jitter=5.0, length=(20.0, 40.0),
                       density=(0.001, 0.005), width=(0.8, 2.0), black=(0.05, 0.25), opacity=(0.35, 0.8),
                       p_screen=0.7, p_haze=0.7, haze=(0.1, 0.4))
RANGES = {"paired": PAIRED, "gallery": GALLERY}

MIN_LENGTH = 10.0


def streak_field(shape: tuple[int, int], rng: np.random.Generator, r: StreakRanges) -> np.ndarray:
    """A single-channel streak intensity map in [0, 1], layers composed far to near."""
    h, w = shape
    n = randint(rng, r.layers)
    angle = uniform(rng, r.angle)
    near_len, near_width, far_density = uniform(rng, r.length), uniform(rng, r.width), uniform(rng, r.density)
    black = uniform(rng, r.black)
    total = np.zeros(shape, np.float32)
    for i in range(n):
        depth = 0.6 if n == 1 else i / (n - 1)  # 0 = farthest, 1 = nearest; a lone layer sits between
        length = max(MIN_LENGTH, near_len * (0.45 + 0.55 * depth))
        sigma = 0.35 + (near_width - 0.35) * depth
        density = far_density * (1.0 - 0.75 * depth)
        count = rng.poisson(density * h * w)
        seeds = np.zeros(shape, np.float32)
        seeds[rng.integers(0, h, count), rng.integers(0, w, count)] = rng.uniform(0.35, 1.0, count)
        a = float(np.clip(angle + rng.uniform(-r.angle_jitter, r.angle_jitter), -30.0, 30.0))
        layer, peak = motion_blur(seeds, length, a, sigma)
        # levels: an isolated streak peaks at its seed amplitude; the black point trims faint ones
        layer = np.clip((layer / peak - black) / (1.0 - black), 0.0, 1.0)
        total = screen(total, layer * (0.5 + 0.5 * depth))
    return total


def haze_veil(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Veiling by rain accumulation: stronger at the top (farther away), patchy, towards a grey-blue airlight."""
    h, w = img.shape[:2]
    airlight = np.float32(rng.uniform(0.72, 0.95)) * np.array([0.96, 0.98, 1.0], np.float32)
    patches = ndimage.zoom(rng.random((6, 6)).astype(np.float32), (h / 6, w / 6), order=1, mode="nearest")
    patches = blur(patches[:h, :w], min(h, w) / 16)
    grad = np.linspace(1.0, 0.6, h, dtype=np.float32)[:, None]
    veil = np.clip(strength * grad * (0.7 + 0.6 * patches), 0.0, 0.9)[..., None]
    return img * (1.0 - veil) + airlight * veil


def add_streaks(img: np.ndarray, rng: np.random.Generator, r: StreakRanges) -> np.ndarray:
    if rng.random() < r.p_haze:
        img = haze_veil(img, rng, uniform(rng, r.haze))
    field = streak_field(img.shape[:2], rng, r)[..., None] * np.float32(uniform(rng, r.opacity))
    # near-white rain, faintly tinted by the scene's average colour
    colour = 0.85 + 0.15 * img.reshape(-1, 3).mean(0)
    colour = np.clip(colour + rng.uniform(-0.03, 0.03), 0.0, 1.0).astype(np.float32)
    if rng.random() < r.p_screen:
        return screen(img, field * colour)
    return img * (1.0 - field) + field * colour


@register_rain("day_streak")
def day_streak(clean: np.ndarray, rng: np.random.Generator, profile: str = "paired") -> RainPair:
    check_profile(profile)
    rainy = add_streaks(clean, rng, RANGES[profile])
    return RainPair(np.clip(rainy, 0.0, 1.0).astype(np.float32), clean)
