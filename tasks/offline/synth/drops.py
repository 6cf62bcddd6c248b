"""Raindrops on the lens or a window, in the manner of Qian et al.'s raindrop set.

Each drop is a circle joined to a downward half-ellipse (a drop sagging under gravity) or a cluster
of metaballs (drops that ran together). Inside, a drop is a small lens: it shows a blurred,
vertically flipped, fisheye-widened view of the scene around it, with a soft dark rim; the
background next to drops is slightly defocused because the camera is focused beyond the glass.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .base import RainPair, check_profile, register_rain
from .ops import blur, randint, smoothstep, uniform


@dataclass(frozen=True)
class DropRanges:
    count: tuple[int, int]           # drops per 256x256 pixels
    radius: tuple[float, float]      # px at a 256-px short side; sizes skew small
    p_metaball: float
    elongation: tuple[float, float]  # half-ellipse depth below the circle, in radii
    zoom: tuple[float, float]        # the scene seen through a drop is this many radii across (per side)
    fisheye: tuple[float, float]     # extra widening towards the rim
    inner_blur: tuple[float, float]  # sigma of the refracted view, px at 256
    edge_dark: tuple[float, float]
    defocus: tuple[float, float]     # sigma of the background blur next to drops, px at 256
    soft: tuple[float, float]        # the drops' own defocus (sigma, px at 256): soft edges
    p_highlight: float


PAIRED = DropRanges(count=(12, 40), radius=(3.0, 18.0), p_metaball=0.3, elongation=(1.0, 1.6),
                    zoom=(1.6, 3.5), fisheye=(0.3, 1.2), inner_blur=(0.8, 2.5), edge_dark=(0.25, 0.55),
                    defocus=(0.8, 2.0), soft=(0.4, 1.2), p_highlight=0.35)
# The stand-in gallery: more, larger, blurrier drops that run together more often.
GALLERY = DropRanges(count=(20, 60), radius=(2.0, 24.0), p_metaball=0.5, elongation=(1.2, 2.2),
                     zoom=(1.2, 3.0), fisheye=(0.6, 1.8), inner_blur=(1.5, 4.0), edge_dark=(0.15, 0.45),
                     defocus=(1.5, 3.5), soft=(1.0, 2.2), p_highlight=0.3)
RANGES = {"paired": PAIRED, "gallery": GALLERY}


def _box(cy: float, cx: float, up: float, down: float, side: float, shape: tuple[int, int]):
    y0, y1 = max(int(cy - up) - 1, 0), min(int(cy + down) + 2, shape[0])
    x0, x1 = max(int(cx - side) - 1, 0), min(int(cx + side) + 2, shape[1])
    return y0, y1, x0, x1


def drop_map(shape: tuple[int, int], rng: np.random.Generator, r: DropRanges):
    """Per pixel: normalised distance ``rho`` to its drop's centre (< 1 inside), and that drop's centre/radius.

    Overlapping drops: each pixel belongs to the drop it is deepest inside (smallest rho).
    """
    h, w = shape
    scale = min(h, w) / 256.0
    rho = np.full(shape, np.inf, np.float32)
    cy_map, cx_map, rad_map = (np.zeros(shape, np.float32) for _ in range(3))
    n = max(1, round(randint(rng, r.count) * h * w / 65536.0))
    lo, hi = r.radius
    for _ in range(n):
        rad = lo * (hi / lo) ** (rng.random() ** 1.6) * scale
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        if rng.random() < r.p_metaball:
            k = int(rng.integers(2, 5))
            bys = cy + rng.normal(0, 0.5 * rad, k)
            bxs = cx + rng.normal(0, 0.5 * rad, k)
            brs = rad * rng.uniform(0.6, 1.0, k)
            ext = 2.0 * rad + 2.0 * 0.5 * rad
            y0, y1, x0, x1 = _box(cy, cx, ext, ext, ext, shape)
            yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
            field = np.zeros(yy.shape, np.float32)
            for by, bx, br in zip(bys, bxs, brs):
                field += br * br / np.maximum((yy - by) ** 2 + (xx - bx) ** 2, 1e-3)
            local = 1.0 / np.sqrt(field)  # 1 on the iso-contour where the summed field reaches 1
            wts = brs ** 2
            ccy, ccx = float(wts @ bys / wts.sum()), float(wts @ bxs / wts.sum())
            crad = float(np.sqrt(wts.sum()))
        else:
            e = uniform(rng, r.elongation)
            y0, y1, x0, x1 = _box(cy, cx, rad, e * rad, rad, shape)
            yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
            u, v = (xx - cx) / rad, (yy - cy) / rad
            v = np.where(v > 0, v / e, v)  # below the centre, the circle stretches into a half-ellipse
            local = np.sqrt(u * u + v * v)
            ccy, ccx, crad = cy + 0.25 * (e - 1.0) * rad, cx, rad
        if y1 <= y0 or x1 <= x0:
            continue
        sub = rho[y0:y1, x0:x1]
        win = local < sub
        sub[win] = local[win]
        cy_map[y0:y1, x0:x1][win] = ccy
        cx_map[y0:y1, x0:x1][win] = ccx
        rad_map[y0:y1, x0:x1][win] = crad
    return rho, cy_map, cx_map, rad_map


def add_drops(img: np.ndarray, rng: np.random.Generator, r: DropRanges, light: np.ndarray | None = None,
              ambient: np.ndarray | None = None) -> np.ndarray:
    """Composite drops over ``img``.

    Night scenes: ``light`` (HxWx3 illumination) makes drops catch nearby lights, brightest on their
    rims; ``ambient`` (an RGB colour) is sky glow gathered by every drop, so drops in the dark still show.
    """
    h, w = img.shape[:2]
    scale = min(h, w) / 256.0
    rho, cy_map, cx_map, rad_map = drop_map((h, w), rng, r)
    zoom, fish = uniform(rng, r.zoom), uniform(rng, r.fisheye)
    edge_dark, hl = uniform(rng, r.edge_dark), rng.random() < r.p_highlight
    view = blur(img, uniform(rng, r.inner_blur) * scale)

    ys, xs = np.nonzero(rho < 1.05)
    if ys.size == 0:
        return img
    p = rho[ys, xs]
    cy, cx, rad = cy_map[ys, xs], cx_map[ys, xs], rad_map[ys, xs]
    u, v = (xs - cx) / rad, (ys - cy) / rad
    spread = zoom * rad * (1.0 + fish * p * p)   # fisheye: the rim sees far more of the scene than the centre
    sy, sx = cy - v * spread, cx + u * spread    # minus: the drop shows the scene upside down
    inside = np.stack([ndimage.map_coordinates(view[..., c], [sy, sx], order=1, mode="mirror")
                       for c in range(3)], axis=-1)
    inside = 0.85 * inside + 0.15 * inside.mean(0) + 0.03  # a lens drop: brighter, lower contrast
    rim = smoothstep(0.55, 0.97, p) * (1.0 - smoothstep(0.97, 1.05, p)) * (1.0 + 0.4 * np.clip(v, 0, 1))
    inside *= (1.0 - edge_dark * rim)[:, None]
    if hl:
        spot = np.exp(-((u + 0.3) ** 2 + (v + 0.45) ** 2) / (2 * 0.1 ** 2)) * (rad > 5 * scale)
        inside += (0.3 * spot)[:, None]
    if light is not None:
        lit = light[ys, xs]
        inside += lit * (0.25 + 0.9 * rim)[:, None]  # drops scatter the nearby light, rims glint
        if hl:
            inside += lit * (1.5 * spot)[:, None]
    if ambient is not None:
        inside += np.asarray(ambient, np.float32) * (1.0 - 0.5 * rim)[:, None]
    alpha = np.zeros((h, w), np.float32)
    alpha[ys, xs] = 1.0 - smoothstep(0.9, 1.05, p)
    layer = np.zeros_like(img)
    layer[ys, xs] = inside

    # defocus the scene just around drops (focus is beyond the glass)
    near = np.clip(2.0 * blur(alpha, 4.0 * scale), 0.0, 1.0)[..., None]
    bg = img * (1.0 - near) + blur(img, uniform(rng, r.defocus) * scale) * near
    # the drops themselves are out of focus too: blur the premultiplied layer and its coverage alike
    soft = uniform(rng, r.soft) * scale
    a = blur(alpha, soft)[..., None]
    return bg * (1.0 - a) + blur(layer * alpha[..., None], soft)


@register_rain("day_drop")
def day_drop(clean: np.ndarray, rng: np.random.Generator, profile: str = "paired") -> RainPair:
    check_profile(profile)
    rainy = add_drops(clean, rng, RANGES[profile])
    return RainPair(np.clip(rainy, 0.0, 1.0).astype(np.float32), clean)
