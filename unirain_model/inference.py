"""Derain images of any size: whole, or in overlapping tiles blended without seams.

Tiles of `tile`×`tile` overlap by at least `overlap` pixels (the last row/column is shifted to end at
the image border). Each tile's output is weighted by a separable window that is 1 in the interior and
rises as a raised cosine over the `overlap` pixels next to an edge shared with a neighbour (edges on
the image border keep weight 1), and the weighted sum is divided by the summed weights. Neighbouring
tiles therefore hand over smoothly, with no visible seam.

Memory stays bounded: the image is kept as uint8, tiles go through the network `batch` at a time, and
only the float32 output accumulator (3×H×W) and weight map (H×W) grow with the image.
"""
from __future__ import annotations

import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unirain_model.data import IMAGE_SUFFIXES, BadImage, load_rgb


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, size) with tiles of `tile` overlapping by >= `overlap`."""
    if size <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def _ramp(n: int, overlap: int, rise: bool, fall: bool) -> np.ndarray:
    w = np.ones(n, dtype=np.float32)
    r = min(overlap, n // 2)
    if r <= 0:
        return w
    ramp = (0.5 - 0.5 * np.cos(np.pi * (np.arange(r) + 0.5) / r)).astype(np.float32)  # (0, 1), never 0
    if rise:
        w[:r] = np.minimum(w[:r], ramp)
    if fall:
        w[n - r :] = np.minimum(w[n - r :], ramp[::-1])
    return w


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return nullcontext()


@torch.no_grad()
def derain_array(model: torch.nn.Module, img: np.ndarray, tile: int | None = 256, overlap: int = 32,
                 batch: int = 4, amp: bool = False) -> np.ndarray:
    """uint8 H×W×3 RGB in, float32 H×W×3 out (unclamped network output, [0, 1] scale).

    `tile=None` (or an image within one tile) runs the whole image at once.
    """
    device = next(model.parameters()).device
    h, w = img.shape[:2]
    if not tile or (h <= tile and w <= tile):
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).to(device).float().div_(255).unsqueeze(0)
        with _autocast(device, amp):
            y = model(x)
        return y[0].float().cpu().numpy().transpose(1, 2, 0)
    if overlap >= tile:
        raise ValueError(f"tile overlap ({overlap}) must be smaller than the tile ({tile})")
    th, tw = min(tile, h), min(tile, w)
    ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
    acc = np.zeros((h, w, 3), dtype=np.float32)
    wsum = np.zeros((h, w), dtype=np.float32)
    boxes = [(y, x) for y in ys for x in xs]
    for i in range(0, len(boxes), batch):
        chunk = boxes[i : i + batch]
        tiles = np.stack([img[y : y + th, x : x + tw] for y, x in chunk])  # uint8 (b, th, tw, 3)
        xt = torch.from_numpy(tiles).to(device).permute(0, 3, 1, 2).float().div_(255)
        with _autocast(device, amp):
            out = model(xt)
        out = out.float().permute(0, 2, 3, 1).cpu().numpy()
        for (y, x), o in zip(chunk, out):
            wy = _ramp(th, overlap, rise=y > 0, fall=y + th < h)
            wx = _ramp(tw, overlap, rise=x > 0, fall=x + tw < w)
            win = wy[:, None] * wx[None, :]
            acc[y : y + th, x : x + tw] += o * win[..., None]
            wsum[y : y + th, x : x + tw] += win
    return acc / wsum[..., None]


def to_uint8(out: np.ndarray) -> np.ndarray:
    return np.round(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)


def derain_file(model, src: str | Path, dst: str | Path, tile: int | None = 256, overlap: int = 32,
                batch: int = 4, amp: bool = False) -> Path:
    img = load_rgb(src)
    out = to_uint8(derain_array(model, img, tile, overlap, batch, amp))
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(out).save(dst)
    return dst


def derain_paths(model, src: str | Path, dst: str | Path, tile: int | None = 256, overlap: int = 32,
                 batch: int = 4, amp: bool = False, progress=None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """A file → `dst` (a file, or a folder to put it in); a folder → `dst` folder with the same
    relative names as PNG. Returns (written, failed[(path, reason)]): a bad image is skipped."""
    src, dst = Path(src), Path(dst)
    if src.is_file():
        jobs = [(src, dst / f"{src.stem}.png" if dst.is_dir() else dst)]
    elif src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        jobs = [(p, (dst / p.relative_to(src)).with_suffix(".png")) for p in files]
    else:
        raise FileNotFoundError(f"input not found: {src}")
    if hasattr(model, "set_record_routing"):
        model.set_record_routing(False)  # routing maps of a huge image are not needed here
    written, failed = [], []
    for i, (a, b) in enumerate(jobs):
        try:
            written.append(derain_file(model, a, b, tile, overlap, batch, amp))
        except (BadImage, OSError, ValueError) as exc:
            warnings.warn(f"skipped {a}: {exc}", stacklevel=2)
            failed.append((a, str(exc)))
        if progress:
            progress(i + 1, len(jobs))
    return written, failed


def tiles_count(h: int, w: int, tile: int, overlap: int) -> int:
    return len(tile_starts(h, min(tile, h), overlap)) * len(tile_starts(w, min(tile, w), overlap))

