"""Before/after grids: a few images per rain type as rows of input | output | target.

A table says how much a derainer gains; a grid shows what it does (streaks left, colours shifted,
details smeared). Evaluation writes one PNG per test set and rain type; training logs the same kind
of grid to TensorBoard at every validation (`TrainingPreviews`), beside the scalars.

Thumbnails are scaled so their longer side is `thumb` pixels and each row carries a caption with the
scores, so a grid of 3 photos stays a modest PNG (~0.3 MB at 160 px).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from data_manifests.paths import confined_join, safe_component

COLUMNS = ("input", "output", "target")
_BG = (32, 32, 32)
_FG = (235, 235, 235)
_PAD = 4
_LINE = 14  # caption line height of PIL's default bitmap font


def thumbnail(img: np.ndarray, size: int) -> np.ndarray:
    """uint8 H×W×3 scaled so its longer side is `size` (aspect kept)."""
    h, w = img.shape[:2]
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    if (nh, nw) == (h, w):
        return img
    resample = Image.Resampling.LANCZOS if s < 1 else Image.Resampling.NEAREST  # upscaled: keep pixels visible
    return np.asarray(Image.fromarray(img).resize((nw, nh), resample))


@dataclass
class PreviewRow:
    images: tuple[np.ndarray, np.ndarray, np.ndarray]  # input, output, target thumbnails (uint8)
    caption: str = ""


def make_grid(rows: list[PreviewRow], thumb: int, title: str = "") -> np.ndarray:
    """uint8 H×W×3: a title line, column headers, then one row of thumbnails (+ caption) per entry."""
    if not rows:
        raise ValueError("make_grid: no rows")
    font = ImageFont.load_default()
    cell = thumb + _PAD
    width = _PAD + len(COLUMNS) * cell
    head = _LINE * (2 if title else 1) + _PAD
    row_h = thumb + _LINE + _PAD
    canvas = Image.new("RGB", (width, head + len(rows) * row_h), _BG)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((_PAD, 1), title, fill=_FG, font=font)
    for j, name in enumerate(COLUMNS):
        draw.text((_PAD + j * cell, head - _LINE - 1), name, fill=_FG, font=font)
    for i, row in enumerate(rows):
        y0 = head + i * row_h
        for j, img in enumerate(row.images):
            h, w = img.shape[:2]
            canvas.paste(Image.fromarray(img), (_PAD + j * cell + (thumb - w) // 2, y0 + (thumb - h) // 2))
        if row.caption:
            draw.text((_PAD, y0 + thumb + 1), row.caption[: max(8, width // 6)], fill=_FG, font=font)
    return np.asarray(canvas)


@dataclass
class PreviewCollector:
    """Keeps the first `per_key` images offered for each (test set, rain type), as thumbnails."""

    per_key: int = 3
    thumb: int = 160
    rows: dict[tuple[str, str], list[PreviewRow]] = field(default_factory=dict)

    def wants(self, key: tuple[str, str]) -> bool:
        return self.per_key > 0 and len(self.rows.get(key, ())) < self.per_key

    def offer(self, key: tuple[str, str], rainy: np.ndarray, output: np.ndarray, target: np.ndarray,
              caption: str = "") -> None:
        if self.wants(key):
            thumbs = tuple(thumbnail(im, self.thumb) for im in (rainy, output, target))
            self.rows.setdefault(key, []).append(PreviewRow(thumbs, caption))  # type: ignore[arg-type]

    def grids(self, title: str = "") -> dict[tuple[str, str], np.ndarray]:
        """One grid per (test set, type), in test-set then declared type order (rain types, snow, fog)."""
        from data_manifests import all_types

        known = all_types()
        order = sorted(self.rows, key=lambda k: (str(k[0]), known.index(k[1]) if k[1] in known else 99, k[1]))
        return {k: make_grid(self.rows[k], self.thumb, f"{k[0]} / {k[1]}" + (f"  ({title})" if title else ""))
                for k in order}

    def write(self, folder: str | Path, title: str = "") -> list[Path]:
        """FOLDER/<test set>/<rain type>.png, one per key."""
        paths = []
        for (test_set, rain_type), grid in self.grids(title).items():
            # test set and rain type come from manifests: one sanitised component each, kept inside
            path = confined_join(folder, test_set, f"{safe_component(rain_type)}.png", what="grid image")
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(grid).save(path, optimize=True)
            paths.append(path)
        return paths


class TrainingPreviews:
    """The first `per_type` validation pairs of each type (centre crops of `crop`), pushed through the
    model at every validation and logged as one TensorBoard image per type (`preview/<type>`).

    Loaded once; a bad pair is left out. Runs on the unwrapped model of rank 0 only (no DDP collective).
    """

    def __init__(self, table: Any, per_type: int = 2, crop: int | None = 128, thumb: int = 128):
        from unirain_model.data import ValImages

        self.thumb = thumb
        self.batches: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if per_type <= 0:
            return
        for t, pairs in zip(table.types, table.pairs):
            # Whole images of different sizes cannot share a batch: fall back to 128² crops.
            items = [it for it in ValImages(list(pairs[:per_type]), crop or 128) if it is not None]
            if items:
                self.batches[t] = (torch.stack([a for a, _ in items]), torch.stack([b for _, b in items]))

    @torch.no_grad()
    def grids(self, model: torch.nn.Module, device: torch.device, autocast=nullcontext) -> dict[str, np.ndarray]:
        from unirain_model.metrics import psnr, to_uint8

        was_training = model.training
        model.eval()
        out = {}
        try:
            for t, (x, y) in self.batches.items():
                with autocast():
                    pred = model(x.to(device)).float().clamp(0, 1).cpu()
                rows = []
                for a, p, b in zip(x, pred, y):
                    ia, ip, ib = to_uint8(a), to_uint8(p), to_uint8(b)
                    cap = f"{psnr(ia, ib):.2f} -> {psnr(ip, ib):.2f} dB"
                    rows.append(PreviewRow(tuple(thumbnail(im, self.thumb) for im in (ia, ip, ib)), cap))  # type: ignore[arg-type]
                out[t] = make_grid(rows, self.thumb)
        finally:
            model.train(was_training)
        return out

    def log(self, writer, model: torch.nn.Module, it: int, device: torch.device, autocast=nullcontext) -> None:
        for t, grid in self.grids(model, device, autocast).items():
            writer.add_image(f"preview/{t}", grid, it, dataformats="HWC")
