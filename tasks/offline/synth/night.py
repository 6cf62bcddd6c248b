"""Night rain (in the spirit of GTAV-NightRain): the clean photo is turned into a night scene with
light sources; rain streaks show only where light falls on them, and raindrops catch the lights.

Night pairs use the *night* scene as their target, so rainy and target differ by rain alone.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .base import RainPair, check_profile, register_rain
from .drops import GALLERY as GALLERY_DROPS
from .drops import PAIRED as DAY_DROPS
from .drops import DropRanges, add_drops
from .ops import gaussian_spot, radial_falloff, randint, screen, uniform
from .streaks import StreakRanges, streak_field

# sodium street lamp, warm tungsten, cool LED, neon red, neon cyan: (colour, relative frequency)
LIGHT_COLOURS = np.array([[1.0, 0.62, 0.28], [1.0, 0.82, 0.6], [0.82, 0.9, 1.0],
                          [1.0, 0.35, 0.3], [0.45, 0.95, 1.0]], np.float32)
LIGHT_WEIGHTS = np.array([0.35, 0.3, 0.2, 0.075, 0.075])


@dataclass(frozen=True)
class NightRanges:
    gamma: tuple[float, float]         # darkening curve on the daylight photo
    exposure: tuple[float, float]
    blue: tuple[float, float]          # blue gain relative to red (moonlight/sky colour shift)
    lights: tuple[int, int]
    reach: tuple[float, float]         # how far a light illuminates, px at 256
    glow: tuple[float, float]          # halo strength of each light
    lit: tuple[float, float]           # how strongly lights brighten the surfaces near them
    streak_ambient: tuple[float, float]  # streak visibility away from any light
    streak_gain: tuple[float, float]   # streak visibility in the light
    scatter: tuple[float, float]       # extra bloom from light scattered by the rain itself
    drop_ambient: tuple[float, float]  # sky glow that drops gather even far from any light
    streaks: StreakRanges
    drops: DropRanges


NIGHT_STREAKS = StreakRanges(layers=(2, 3), angle=(-30.0, 30.0), angle_jitter=3.0, length=(20.0, 40.0),
                             density=(0.0015, 0.007), width=(0.5, 1.4), black=(0.0, 0.1), opacity=(1.0, 1.0),
                             p_screen=1.0, p_haze=0.0, haze=(0.0, 0.0))
PAIRED = NightRanges(gamma=(1.8, 2.6), exposure=(0.2, 0.45), blue=(1.05, 1.35), lights=(2, 6), reach=(12.0, 35.0),
                     glow=(0.3, 0.8), lit=(0.5, 1.2), streak_ambient=(0.03, 0.1), streak_gain=(1.2, 2.5),
                     scatter=(0.0, 0.08), drop_ambient=(0.04, 0.1), streaks=NIGHT_STREAKS, drops=DAY_DROPS)
# The stand-in gallery: darker scenes, fewer and warmer-looking but brighter lights, fainter ambient rain.
GALLERY = NightRanges(gamma=(2.2, 3.2), exposure=(0.1, 0.3), blue=(1.0, 1.2), lights=(1, 4), reach=(20.0, 50.0),
                      glow=(0.6, 1.2), lit=(0.8, 1.8), streak_ambient=(0.0, 0.05), streak_gain=(1.5, 3.0),
                      scatter=(0.03, 0.15), drop_ambient=(0.03, 0.1),
                      streaks=StreakRanges(layers=(2, 4), angle=(-20.0, 20.0), angle_jitter=5.0, length=(25.0, 40.0),
                                           density=(0.0012, 0.005), width=(0.8, 2.0), black=(0.0, 0.15),
                                           opacity=(1.0, 1.0), p_screen=1.0, p_haze=0.0, haze=(0.0, 0.0)),
                      drops=replace(GALLERY_DROPS, count=(15, 45), p_highlight=0.6))
RANGES = {"paired": PAIRED, "gallery": GALLERY}


def to_night(clean: np.ndarray, rng: np.random.Generator, r: NightRanges) -> tuple[np.ndarray, np.ndarray]:
    """Return the clean night scene and the illumination map (HxWx3) of its light sources."""
    h, w = clean.shape[:2]
    scale = min(h, w) / 256.0
    base = clean ** np.float32(uniform(rng, r.gamma))
    blue = uniform(rng, r.blue)
    tint = np.array([1.0, 0.5 * (1.0 + blue), blue], np.float32)
    tint /= tint.max()
    night = base * tint * np.float32(uniform(rng, r.exposure))

    light = np.zeros_like(clean)
    glow = np.zeros_like(clean)
    glow_k = uniform(rng, r.glow)
    for _ in range(randint(rng, r.lights)):
        cy, cx = rng.uniform(-0.05, 0.7) * h, rng.uniform(0.0, 1.0) * w  # lamps and windows sit high
        colour = LIGHT_COLOURS[rng.choice(len(LIGHT_COLOURS), p=LIGHT_WEIGHTS)] * np.float32(rng.uniform(0.7, 1.1))
        reach = uniform(rng, r.reach) * scale
        light += radial_falloff((h, w), cy, cx, reach, power=3)[..., None] * colour
        core = gaussian_spot((h, w), cy, cx, rng.uniform(1.0, 2.5) * scale)
        halo = radial_falloff((h, w), cy, cx, 0.18 * reach)
        white = 0.6 + 0.4 * colour  # cores saturate towards white
        glow += core[..., None] * white * 1.5 + halo[..., None] * colour * glow_k
    night = night + base * light * np.float32(uniform(rng, r.lit)) + glow
    return np.clip(night, 0.0, 1.0).astype(np.float32), light.astype(np.float32)


@register_rain("night_streak")
def night_streak(clean: np.ndarray, rng: np.random.Generator, profile: str = "paired") -> RainPair:
    check_profile(profile)
    r = RANGES[profile]
    night, light = to_night(clean, rng, r)
    streaks = streak_field(night.shape[:2], rng, r.streaks)[..., None]
    # a drop in the dark is invisible: streak brightness follows the light falling on it
    seen = streaks * (uniform(rng, r.streak_ambient) + uniform(rng, r.streak_gain) * light)
    rainy = screen(night, np.clip(seen, 0.0, 1.0)) + light * np.float32(uniform(rng, r.scatter))
    return RainPair(np.clip(rainy, 0.0, 1.0).astype(np.float32), night)


@register_rain("night_drop")
def night_drop(clean: np.ndarray, rng: np.random.Generator, profile: str = "paired") -> RainPair:
    check_profile(profile)
    r = RANGES[profile]
    night, light = to_night(clean, rng, r)
    sky = np.array([0.75, 0.85, 1.0], np.float32) * np.float32(uniform(rng, r.drop_ambient))
    rainy = add_drops(night, rng, r.drops, light=light * np.float32(0.6), ambient=sky)
    return RainPair(np.clip(rainy, 0.0, 1.0).astype(np.float32), night)
