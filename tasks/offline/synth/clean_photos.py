"""Clean images for synthesis: photos that ship inside installed packages, or a user's folder.

Every image is a random crop (random scale, never upsampling unless the photo is smaller than the
requested size) with a random horizontal flip, resized to the requested size. Only horizontal flips:
an upside-down street is not a plausible rain scene.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _skimage(name: str):
    def load() -> np.ndarray:
        from skimage import data
        return getattr(data, name)()
    return load


def _motorcycle(view: int):
    def load() -> np.ndarray:
        from skimage import data
        return data.stereo_motorcycle()[view]
    return load


def _sklearn(fname: str):
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image
        return load_sample_image(fname)
    return load


def _grace_hopper() -> np.ndarray:
    from matplotlib import cbook
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


# Offline colour photos found in scikit-image, scikit-learn and matplotlib wheels.
BUILTIN_PHOTOS = {
    "astronaut": _skimage("astronaut"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "motorcycle_left": _motorcycle(0),
    "motorcycle_right": _motorcycle(1),
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
    "grace_hopper": _grace_hopper,
}


@lru_cache(maxsize=None)
def builtin_photo(name: str) -> Image.Image:
    arr = np.ascontiguousarray(BUILTIN_PHOTOS[name]()[..., :3], dtype=np.uint8)
    return Image.fromarray(arr, "RGB")


def list_clean_dir(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive), in a stable order so a seed picks the same photo anywhere."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"clean image folder not found: {root}")
    files = sorted((p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in clean image folder {root}")
    return files


@lru_cache(maxsize=32)
def _load_file(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return ImageOps.exif_transpose(im).convert("RGB")  # a phone photo upright, as displayed
    except Exception as exc:  # truncated, not an image, decompression bomb: name the file
        raise ValueError(f"cannot read clean image {path}: {exc}") from exc


def random_crop(photo: Image.Image, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random crop of ``photo`` resized to ``size`` = (width, height), float32 in [0, 1]."""
    w, h = size
    iw, ih = photo.size
    s_min = max(w / iw, h / ih)                     # the scale at which the photo just covers the crop
    s = s_min * (max(s_min, 1.0) / s_min) ** rng.random()  # log-uniform up to native resolution
    cw, ch = w / s, h / s
    x0, y0 = rng.uniform(0, max(iw - cw, 0.0)), rng.uniform(0, max(ih - ch, 0.0))
    crop = photo.resize((w, h), Image.Resampling.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
    arr = np.asarray(crop, dtype=np.float32) / 255.0
    if rng.random() < 0.5:
        arr = arr[:, ::-1]
    return np.ascontiguousarray(np.clip(arr, 0.0, 1.0))


class CleanSource:
    """Where clean photos come from: the built-in photos, or every image under ``clean_dir``."""

    def __init__(self, clean_dir: str | Path | None = None):
        self.files = list_clean_dir(clean_dir) if clean_dir is not None else None
        self.names = [str(p) for p in self.files] if self.files else list(BUILTIN_PHOTOS)

    def __len__(self) -> int:
        return len(self.names)

    def photo(self, index: int) -> Image.Image:
        return _load_file(self.files[index]) if self.files else builtin_photo(self.names[index])

    def sample(self, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
        return random_crop(self.photo(int(rng.integers(len(self)))), size, rng)
