"""Perceptual hashes that survive resizing, re-encoding and crops (numpy only, no extra dependency).

`hash_grey`: the DCT hash of Zauner (2010) as `imagehash.phash` computes it: grey, 32x32, 2-D DCT,
the 8x8 lowest frequencies compared with their median -> 64 bits. Resizing and JPEG move it by a few
bits; a crop moves the content, and a 5% crop on each side already moves it by ~11 bits on average
(20 at worst) on the built-in photos, as far as unrelated photos (>= 20). So the *test* side is
hashed at `CROP_BOXES` too: every combination of 0/5/10% off each side (81 boxes), so a candidate cut
from a test image by up to ~10% a side is within a few bits of one of them, plus zoomed-in views
(85/75/65% of the side at 9 positions, 27 boxes) for larger crops of the same photo (the demo's
synthetic train and test sets crop the same photos: one such pair is found only with these).

A hash match alone is not a leak: with 108 boxes per test image, unrelated photos come as close as
12-14 bits. Each hash carries its 63 low-frequency DCT coefficients without the mean (`vector`,
unit length): their cosine is a correlation of the low-passed pictures, insensitive to brightness
and contrast. Measured on the built-in photos (`tests/test_leak.py` checks the same transforms):
transformed copies >= 0.93, unrelated photos <= 0.69 at their best box.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.imageio import DEFAULT_MAX_PIXELS, load_reduced

HASH_SIDE = 32          # the picture the DCT sees
KEEP = 8                # 8x8 lowest frequencies -> 64 bits
WORK_SIDE = 128         # decoded images are shrunk to this long side before cropping and hashing
DECODE_SIDE = 2 * WORK_SIDE  # JPEGs decode at the DCT scale that covers this (the sanity views' too)
CROP_MARGINS = (0.0, 0.05, 0.10)
ZOOM_SCALES = (0.85, 0.75, 0.65)
# (left, top, right, bottom) margins: every combination of CROP_MARGINS (small crops, any side: 81),
# then zoomed-in views at ZOOM_SCALES of the side, at the corners, edge centres and centre (27)
CROP_BOXES: tuple[tuple[float, float, float, float], ...] = tuple(itertools.product(CROP_MARGINS, repeat=4)) + tuple(
    (px * (1 - s), py * (1 - s), (1 - px) * (1 - s), (1 - py) * (1 - s))
    for s in ZOOM_SCALES for px in (0.0, 0.5, 1.0) for py in (0.0, 0.5, 1.0))


@dataclass(frozen=True)
class Hashes:
    """Perceptual hashes of one or more images: `bits` (n,) uint64, `vectors` (n, 63) float32 unit rows."""

    bits: np.ndarray
    vectors: np.ndarray

    def __len__(self) -> int:
        return len(self.bits)

    @staticmethod
    def concat(parts: list["Hashes"]) -> "Hashes":
        if not parts:
            return Hashes(np.zeros(0, np.uint64), np.zeros((0, KEEP * KEEP - 1), np.float32))
        return Hashes(np.concatenate([p.bits for p in parts]), np.concatenate([p.vectors for p in parts]))


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix (scipy.fft.dctn(x, norm='ortho') == D @ x @ D.T), rows cut to KEEP."""
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d[:KEEP].astype(np.float32)


_D = _dct_matrix(HASH_SIDE)
_WEIGHTS = 1 << np.arange(63, -1, -1, dtype=np.uint64)


def hash_grey(grey: Image.Image) -> tuple[int, np.ndarray]:
    """(64-bit hash, unit 63-vector) of one greyscale PIL image."""
    g = np.asarray(grey.resize((HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS), dtype=np.float32)
    low = (_D @ g @ _D.T).ravel()
    bits = low > np.median(low)
    vector = low[1:] / max(float(np.linalg.norm(low[1:])), 1e-6)
    return int((bits.astype(np.uint64) * _WEIGHTS).sum()), vector


def hash_variants(grey: Image.Image, boxes=((0.0, 0.0, 0.0, 0.0),)) -> Hashes:
    """Hashes of `grey` cut to each box (left, top, right, bottom margins as fractions of the side)."""
    w, h = grey.size
    bits, vectors = [], []
    for left, top, right, bottom in boxes:
        box = (round(left * w), round(top * h), w - round(right * w), h - round(bottom * h))
        b, v = hash_grey(grey.crop(box) if box != (0, 0, w, h) else grey)
        bits.append(b)
        vectors.append(v)
    return Hashes(np.array(bits, dtype=np.uint64), np.stack(vectors).astype(np.float32))


def load_grey(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """A small greyscale copy of an image file (JPEG decodes at reduced size), EXIF orientation applied;
    a file that cannot be decoded raises ImageRejected."""
    return grey_of(load_reduced(path, DECODE_SIDE, max_pixels)[0])


def grey_of(img: Image.Image) -> Image.Image:
    """The hashed greyscale copy of an image decoded by `load_reduced(..., DECODE_SIDE)`."""
    grey = img.convert("L")
    grey.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return grey


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Hamming distances of two uint64 hash arrays."""
    return np.bitwise_count(np.bitwise_xor(a[:, None], b[None, :])).astype(np.uint8)
