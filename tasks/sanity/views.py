"""The downscaled views every sanity check reads, made once per image.

A pair's checks never look at full-resolution pixels: each image is decoded once (a JPEG at the reduced
scale that still covers `mid`) and shrunk by box filters to
  - `mid`:   grey, long side <= MID_SIDE (256): the resolution of the sharpness and difference checks,
             where a 1 px blur of a 512 px target and thin rain streaks are still visible;
  - `small`: RGB, long side <= SMALL_SIDE (128): phase correlation;
  - `tiny`:  `small` box-averaged 4x4 (32 px): the low-passed picture of the structure and colour checks.
`scale` converts a shift measured on `small` back to pixels of the original image.
All three come from one uint8 array (`reduce_image`: RGB, long side <= MID_SIDE), which is what an
earlier stage that decoded the image hands over (`tasks.sanity.view_cache`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.imageio import DEFAULT_MAX_PIXELS, load_reduced, to_rgb

MID_SIDE = 256
SMALL_SIDE = 128
TINY_FACTOR = 4
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
DRAFT_SIDE = MID_SIDE  # JPEGs decode at the 1/2, 1/4 or 1/8 scale that still covers `mid` (DCT-domain
                       # downscaling: 2-4x faster; both images of a pair alike, as they have one size)


@dataclass(frozen=True)
class View:
    mid: np.ndarray     # (h, w) float32 grey in [0, 255]
    small: np.ndarray   # (h, w, 3) float32 RGB in [0, 1]
    tiny: np.ndarray    # (h, w, 3) float32 RGB in [0, 1], `small` box-averaged 4x4: the low-passed picture
    scale: float        # original pixels per `small` pixel (along the width)
    size: tuple[int, int]  # original (width, height), EXIF orientation applied


def _shrink(img: Image.Image, side: int) -> Image.Image:
    w, h = img.size
    factor = max(w, h) / side
    if factor <= 1:
        return img
    if factor == int(factor):
        return img.reduce(int(factor))  # integer box average: ~3x faster than resize
    return img.resize((max(1, round(w / factor)), max(1, round(h / factor))), Image.Resampling.BOX)


def reduce_image(img: Image.Image) -> np.ndarray:
    """The (h, w, 3) uint8 RGB image at long side <= MID_SIDE that every view is made from: what
    `tasks.sanity.view_cache` stores, since `view_from_reduced` remakes the exact views from it."""
    return np.asarray(_shrink(to_rgb(img), MID_SIDE))


def view_from_reduced(mid_rgb: np.ndarray, size: tuple[int, int]) -> View:
    """The views of a `reduce_image` array; `size`: the original (width, height)."""
    small = _shrink(Image.fromarray(mid_rgb), SMALL_SIDE)
    tiny = small.reduce(TINY_FACTOR) if min(small.size) >= 4 * TINY_FACTOR else small
    return View(mid=mid_rgb.astype(np.float32) @ LUMA,  # float: no rounding to grey levels
                small=np.asarray(small, dtype=np.float32) / 255.0,
                tiny=np.asarray(tiny, dtype=np.float32) / 255.0,
                scale=size[0] / small.size[0], size=tuple(size))


def view_of(img: Image.Image, size: tuple[int, int] | None = None) -> View:
    """The views of a decoded PIL image; `size`: the original size when `img` was decoded smaller."""
    return view_from_reduced(reduce_image(img), size or img.size)


def view_of_array(arr: np.ndarray) -> View:
    """Views of an HxWx3 array (uint8, or float in [0, 1] rounded to 8 bits as a PNG would store it)."""
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return view_of(Image.fromarray(arr, "RGB"))


def load_view(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> View:
    """Decode one image file into its views; a file that cannot be decoded raises ImageRejected."""
    img, size = load_reduced(path, DRAFT_SIDE, max_pixels)
    return view_of(img, size)
