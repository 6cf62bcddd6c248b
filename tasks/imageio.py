"""Image probing and loading with one rule: a bad image raises `ImageRejected(reason, detail)`.

`probe_image_bytes` learns format and size from the header and checks the file's end for
truncation without decoding pixels; `load_rgb` decodes and converts 16-bit, grayscale, RGBA,
palette and CMYK images to 8-bit RGB (accepted, not rejected).
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

ACCEPTED_FORMATS = frozenset({"PNG", "JPEG", "BMP", "TIFF", "WEBP", "PPM"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"})
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own bomb limit
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


class ImageRejected(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str
    mode: str


def is_image_name(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise ImageRejected("unreadable", "empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageRejected("decompression_bomb", str(exc)) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ImageRejected("unreadable", f"not a readable image: {exc}") from None
    if img.format not in ACCEPTED_FORMATS:
        raise ImageRejected("unsupported_format", f"format {img.format} is not one of {sorted(ACCEPTED_FORMATS)}")
    width, height = img.size
    if width * height > max_pixels:
        raise ImageRejected("decompression_bomb", f"{width}x{height} = {width * height} pixels > {max_pixels}")
    return img


def _check_complete(data: bytes, img: Image.Image) -> None:
    """Truncation shows at the end of the file; checking it costs no decoding. Damage inside a
    complete-looking file surfaces when a later stage decodes it, as that stage's reject."""
    if img.format == "PNG":
        if not data.endswith(PNG_END):
            raise ImageRejected("unreadable", "truncated PNG (no IEND chunk at the end)")
    elif img.format == "JPEG" and b"\xff\xd9" not in data[-1024:]:
        raise ImageRejected("unreadable", "truncated JPEG (no end-of-image marker)")


def probe_image_bytes(data: bytes, min_side: int = 64, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    img = _open(data, max_pixels)
    info = ImageInfo(img.size[0], img.size[1], img.format, img.mode)
    _check_complete(data, img)
    if min(info.width, info.height) < min_side:
        raise ImageRejected("too_small", f"{info.width}x{info.height} is under {min_side} px on a side")
    return info


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any accepted mode: 16-bit and 32-bit integer scaled, alpha dropped, CMYK converted."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        gray = np.clip(np.round(arr * 255.0 if arr.max() <= 1.0 else arr), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return img.convert("RGBA").convert("RGB")
    return img.convert("RGB")


def decode_rgb(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    img = _open(data, max_pixels)
    try:
        img.load()
    except Exception as exc:  # truncated or corrupt pixel data
        raise ImageRejected("unreadable", f"cannot decode: {exc}") from None
    return to_rgb(img)


def load_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode a file to an 8-bit RGB PIL image, or raise ImageRejected."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageRejected("unreadable", f"cannot read {path}: {exc.strerror or exc}") from None
    return decode_rgb(data, max_pixels)


def mean_luminance(data: bytes, max_side: int = 64) -> float:
    """Mean BT.601 luma in [0, 1] of a small decoded thumbnail (JPEG decodes at reduced size)."""
    img = Image.open(io.BytesIO(data))
    img.draft("RGB", (max_side, max_side))
    img = to_rgb(img)
    img.thumbnail((max_side, max_side))
    return float(np.asarray(img.convert("L"), dtype=np.float32).mean() / 255.0)
