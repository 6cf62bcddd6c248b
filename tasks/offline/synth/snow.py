"""Falling snow, after the recipe behind Snow100K (Liu et al., DesnowNet): several depth layers of
flakes, each layer with its own flake size, defocus blur, motion and opacity, over the scene, plus a
faint whitening veil (the snow in the air between the camera and the scene).

Far layers: many small, sharp, dim flakes; near layers: few large flakes, defocused (the camera is
focused beyond them) and brighter. A layer is a sparse field of flake centres convolved with a short
motion-blur line (flakes drift at an angle while the shutter is open) and a Gaussian of the layer's
size; it is normalised so an isolated flake peaks at its seed amplitude, then alpha-blended towards a
near-white, faintly blue snow colour. The target is the clean photo.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import RainPair, check_profile, register_rain
from .ops import blur, motion_blur, randint, uniform


@dataclass(frozen=True)
class SnowRanges:
    layers: tuple[int, int]          # depth layers, far to near
    density: tuple[float, float]     # flakes per pixel in the farthest layer (nearer layers are sparser)
    near_size: tuple[float, float]   # Gaussian sigma of the nearest layer's flakes, px at a 256-px short side
    far_size: tuple[float, float]    # ... of the farthest layer's
    drift: tuple[float, float]       # motion-blur length, px (short: flakes fall slowly)
    angle: tuple[float, float]       # drift direction, degrees from vertical
    opacity: tuple[float, float]     # nearest layer's opacity (farther layers are dimmer)
    veil: tuple[float, float]        # whitening veil strength


PAIRED = SnowRanges(layers=(2, 4), density=(0.002, 0.008), near_size=(1.6, 3.6), far_size=(0.35, 0.8),
                    drift=(1.0, 6.0), angle=(-35.0, 35.0), opacity=(0.75, 1.0), veil=(0.0, 0.15))
# The stand-in gallery: bigger, blurrier flakes, more veil, gentler drift.
GALLERY = SnowRanges(layers=(3, 5), density=(0.001, 0.005), near_size=(2.5, 5.0), far_size=(0.5, 1.0),
                     drift=(1.0, 4.0), angle=(-20.0, 20.0), opacity=(0.55, 0.9), veil=(0.05, 0.3))
RANGES = {"paired": PAIRED, "gallery": GALLERY}


def flake_layer(shape: tuple[int, int], rng: np.random.Generator, count: int, size: float, drift: float,
                angle: float) -> np.ndarray:
    """One layer in [0, 1]: `count` flakes of Gaussian sigma `size` px, drifted `drift` px at `angle`."""
    h, w = shape
    seeds = np.zeros(shape, np.float32)
    np.add.at(seeds, (rng.integers(0, h, count), rng.integers(0, w, count)), rng.uniform(0.5, 1.0, count).astype(np.float32))
    field, peak = motion_blur(seeds, max(1.0, drift), angle, size)
    return np.clip(field / peak, 0.0, 1.0)


def snow_field(shape: tuple[int, int], rng: np.random.Generator, r: SnowRanges) -> np.ndarray:
    """Alpha of the snow in [0, 1], layers composed far to near (each over the ones behind it)."""
    h, w = shape
    scale = min(h, w) / 256.0
    n = randint(rng, r.layers)
    density, near, far = uniform(rng, r.density), uniform(rng, r.near_size), uniform(rng, r.far_size)
    drift, angle, opacity = uniform(rng, r.drift), uniform(rng, r.angle), uniform(rng, r.opacity)
    alpha = np.zeros(shape, np.float32)
    for i in range(n):
        depth = i / (n - 1) if n > 1 else 1.0  # 0 = farthest, 1 = nearest
        size = max(0.3, (far + (near - far) * depth) * scale)
        count = int(rng.poisson(density * (1.0 - 0.8 * depth) * h * w))
        layer = flake_layer(shape, rng, count, size, drift * (0.5 + depth), angle + rng.uniform(-8.0, 8.0))
        a = layer * np.float32(opacity * (0.45 + 0.55 * depth))
        alpha = alpha + a * (1.0 - alpha)
    return alpha


@register_rain("snow")
def snow(clean: np.ndarray, rng: np.random.Generator, profile: str = "paired") -> RainPair:
    check_profile(profile)
    r = RANGES[profile]
    colour = np.clip(np.array([0.94, 0.96, 1.0], np.float32) * np.float32(rng.uniform(0.9, 1.0)), 0, 1)
    veil = np.float32(uniform(rng, r.veil))
    img = clean * (1.0 - veil) + colour * veil  # the snow in the air: a light, even whitening
    alpha = snow_field(clean.shape[:2], rng, r)[..., None]
    alpha = np.maximum(alpha, blur(alpha, 1.5) * 0.5)  # a soft halo: flakes scatter light around them
    rainy = img * (1.0 - alpha) + colour * alpha
    return RainPair(np.clip(rainy, 0.0, 1.0).astype(np.float32), clean)
