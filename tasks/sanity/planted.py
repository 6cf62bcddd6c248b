"""Planted damage for the sanity benchmark and tests: each kind of bad pair a public set holds, at
several strengths, made from a good (rainy, target) pair. Arrays are float32 HxWx3 in [0, 1].

`DAMAGES[kind]` lists (label, fn(rainy, target, other) -> (rainy, target)); `other` is the target of
another pair (for `unrelated_target`). The kinds are the sanity checks' reasons. `CONTROLS` lists
changes of a good pair that are not damage (both images JPEG-encoded alike).
"""
from __future__ import annotations

import io
from typing import Callable

import numpy as np
from PIL import Image
from scipy import ndimage

Damage = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _u8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(_u8(img), "RGB").save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float32) / 255.0


def shift(img: np.ndarray, dy: float, dx: float) -> np.ndarray:
    return ndimage.shift(img, (dy, dx, 0), order=1, mode="nearest").astype(np.float32)


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(img, (sigma, sigma, 0)).astype(np.float32)


def _shifted(px: float) -> Damage:
    angle = np.deg2rad(37.0)  # not along an axis
    return lambda r, t, o: (r, shift(t, px * np.sin(angle), px * np.cos(angle)))


def _other(alpha: float) -> Damage:
    # the other target turned half a turn: a different scene even when both crops came from one photo
    return lambda r, t, o: (r, ((1 - alpha) * t + alpha * o[::-1, ::-1]).astype(np.float32))


def _cast(s: float) -> Damage:
    return lambda r, t, o: (r, np.clip(t * np.array([1 + s, 1.0, 1 - s], np.float32), 0, 1))


def _exposure(k: float) -> Damage:
    return lambda r, t, o: (r, np.clip(t * np.float32(k), 0, 1))


def _gamma(g: float) -> Damage:
    return lambda r, t, o: (r, np.clip(t, 0, 1) ** np.float32(g))


def _jpeg_target(quality: int) -> Damage:
    return lambda r, t, o: (r, jpeg(t, quality))


def _both_jpeg(quality: int) -> Damage:
    return lambda r, t, o: (jpeg(r, quality), jpeg(t, quality))


def _noise(sigma: float) -> Damage:
    def fn(r, t, o):
        rng = np.random.default_rng(int(t.sum() * 1000) % 2**32)
        return np.clip(t + rng.normal(0, sigma / 255.0, t.shape).astype(np.float32), 0, 1), t
    return fn


DAMAGES: dict[str, list[tuple[str, Damage]]] = {
    "misaligned": [(f"shift {px:g} px", _shifted(px)) for px in (1, 2, 3, 5, 8)],
    "unrelated_target": [(f"other scene {a:.0%}", _other(a)) for a in (0.5, 0.75, 1.0)],
    "blurry_target": [(f"blur sigma {s:g}", (lambda s: lambda r, t, o: (r, blur(t, s)))(s)) for s in (0.7, 1.0, 1.5, 2.5)],
    "jpeg_target": [(f"JPEG q{q}", _jpeg_target(q)) for q in (10, 20, 30, 50)],
    "color_shift": [(f"cast {s:g}", _cast(s)) for s in (0.05, 0.1, 0.2)]
                   + [(f"exposure x{k:g}", _exposure(k)) for k in (0.6, 0.8, 1.3)]
                   + [(f"gamma {g:g}", _gamma(g)) for g in (0.7, 1.5)],
    "no_rain": [("input = target", lambda r, t, o: (t.copy(), t)),
                ("input = JPEG q90 of target", lambda r, t, o: (jpeg(t, 90), t)),
                ("input = target + noise 2/255", _noise(2.0))],
}

# Good pairs stored the way public sets often store them: both images JPEG-encoded at one quality (the
# input after its rain was added). Not damage: no check should reject them for it (the bench reports
# how many are; `jpeg_target` compares the target's blocking with the input's for this reason).
CONTROLS: list[tuple[str, Damage]] = [(f"both JPEG q{q}", _both_jpeg(q)) for q in (90, 75, 50)]
