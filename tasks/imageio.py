"""Image probing and loading with one rule: a bad image raises `ImageRejected(reason, detail)`.

`probe_image_bytes` learns format and size from the header and checks the file's end for
truncation without decoding pixels; `load_rgb` decodes and converts 16-bit, grayscale, RGBA,
palette and CMYK images to 8-bit RGB (accepted, not rejected).

Every read honours the EXIF orientation, as a photo viewer does: `decode_rgb` applies it to the
pixels, and `probe_image_bytes` reports the size as displayed (width and height swapped for
orientations 5-8, learnt from the header alone), so a portrait phone photo is portrait everywhere.
"""
from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ACCEPTED_FORMATS = frozenset({"PNG", "JPEG", "BMP", "TIFF", "WEBP", "PPM"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"})
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own bomb limit
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


class ImageRejected(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


EXIF_ORIENTATION = 0x0112
_SWAPS_SIDES = frozenset({5, 6, 7, 8})  # transpose, rotate 90/270, transverse


@dataclass(frozen=True)
class ImageInfo:
    width: int  # as displayed: after the EXIF orientation
    height: int
    format: str
    mode: str
    orientation: int = 1  # EXIF orientation (1 = as stored)


def _png_exif_chunk(data: bytes) -> bytes | None:
    """The eXIf chunk of a PNG wherever it is (it may follow the pixel data), by walking chunk headers."""
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if kind == b"eXIf":
            return data[pos + 8:pos + 8 + length]
        if kind == b"IEND":
            return None
        pos += 12 + length
    return None


def exif_orientation(img: Image.Image, data: bytes | None = None) -> int:
    """The EXIF orientation 1-8 from the file's headers (1 when absent or unreadable), without decoding.

    `Image.Image.getexif` is called directly: PNG's own override decodes the whole image to look
    for an eXIf chunk after the pixel data; that chunk is found in `data` instead.
    """
    try:
        exif = Image.Image.getexif(img)
        if EXIF_ORIENTATION not in exif and img.format == "PNG" and data is not None and "exif" not in img.info:
            chunk = _png_exif_chunk(data)
            if chunk:
                exif = Image.Exif()
                exif.load(chunk)
        value = int(exif.get(EXIF_ORIENTATION, 1))
        return value if value in range(1, 9) else 1
    except Exception:  # a damaged EXIF block is not a damaged image
        return 1


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
    width, height = img.size
    orientation = exif_orientation(img, data)
    if orientation in _SWAPS_SIDES:
        width, height = height, width
    info = ImageInfo(width, height, img.format, img.mode, orientation)
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
    try:
        ImageOps.exif_transpose(img, in_place=True)  # no copy when the orientation is 1 or absent
    except Exception:  # a damaged EXIF block: keep the pixels as stored
        pass
    return to_rgb(img)


def _unopenable(path: str | Path, exc: OSError) -> ImageRejected:
    if exc.errno == errno.ELOOP:
        return ImageRejected("unreadable", "a symbolic link loop")
    if exc.errno == errno.ENOENT and os.path.islink(path):
        return ImageRejected("unreadable", f"a dangling symbolic link (-> {os.readlink(path)})")
    try:  # a socket cannot be opened at all (ENXIO): say what it is
        mode = os.stat(path).st_mode
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        return ImageRejected("not_a_file", f"{_kind(mode)}, not a file")
    return ImageRejected("unreadable", f"cannot read: {exc.strerror or exc}")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def read_file_bytes(path: str | Path) -> bytes:
    """The bytes of a regular file (symbolic links followed), or ImageRejected naming why not.

    `unreadable`: a dangling link, a link loop, no permission, an I/O error; `not_a_file`: a FIFO,
    a socket, a device or a folder (e.g. a link to one). The file is opened non-blocking and checked
    on the open descriptor, so a FIFO never blocks the reader and nothing is swapped in between.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _unopenable(path, exc) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            link = f" (link -> {os.readlink(path)})" if os.path.islink(path) else ""
            raise ImageRejected("not_a_file", f"{_kind(mode)}, not a file{link}")
        f = open(fd, "rb")  # owns fd from here
    except BaseException:
        os.close(fd)
        raise
    with f:
        try:
            return f.read()
        except OSError as exc:
            raise ImageRejected("unreadable", f"cannot read: {exc.strerror or exc}") from None


def read_image_bytes(path: str | Path) -> bytes:
    """`read_file_bytes` with the path in a rejection's detail."""
    try:
        return read_file_bytes(path)
    except ImageRejected as exc:
        raise ImageRejected(exc.reason, f"{path}: {exc.detail}") from None


def load_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode a file to an 8-bit RGB PIL image, or raise ImageRejected."""
    return decode_rgb(read_image_bytes(path), max_pixels)


def load_reduced(path: str | Path, side: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, tuple[int, int]]:
    """Decode a file at reduced size where the format allows it (JPEG: the DCT-domain 1/2, 1/4 or 1/8
    scale that still covers `side`; other formats whole), as 8-bit RGB with EXIF orientation applied.
    Returns the image and the file's full size in the same orientation; ImageRejected as `load_rgb`."""
    return decode_reduced(read_image_bytes(path), side, max_pixels, str(path))


def decode_reduced(data: bytes, side: int, max_pixels: int = DEFAULT_MAX_PIXELS,
                   name: str = "image") -> tuple[Image.Image, tuple[int, int]]:
    """`load_reduced` on bytes already read (a caller that also hashes them reads the file once);
    `name` prefixes a decoding failure's detail."""
    img = _open(data, max_pixels)
    stored = img.size
    try:
        img.draft("RGB", (side, side))
        img.load()
    except Exception as exc:  # truncated or corrupt pixel data
        raise ImageRejected("unreadable", f"{name}: cannot decode: {exc}") from None
    ratio = stored[0] / img.size[0]
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a damaged EXIF block: keep the pixels as stored
        pass
    return to_rgb(img), (round(img.size[0] * ratio), round(img.size[1] * ratio))


def mean_luminance(data: bytes, max_side: int = 64) -> float:
    """Mean BT.601 luma in [0, 1] of a small decoded thumbnail (JPEG decodes at reduced size)."""
    img = Image.open(io.BytesIO(data))
    img.draft("RGB", (max_side, max_side))
    img = to_rgb(img)
    img.thumbnail((max_side, max_side))
    return float(np.asarray(img.convert("L"), dtype=np.float32).mean() / 255.0)
