"""RUN/reports/sanity_rejects.png: a few rejected pairs per sanity reason (input | target | score), so a
user can see why they went. Pillow only (no matplotlib): one thumbnail row per pair, one block per reason."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

from data_manifests import RunLayout
from tasks.imageio import ImageRejected, load_rgb

from .checks import CHECKS, ORDER

PER_REASON = 4
THUMB = 128
TEXT_W = 300
ROW_H = THUMB + 8
TITLE_H = 22


def _thumb(path: str) -> Image.Image:
    try:
        img = load_rgb(path)
    except (ImageRejected, OSError):
        return Image.new("RGB", (THUMB, THUMB), (80, 0, 0))
    img.thumbnail((THUMB, THUMB))
    return img


def draw_grid(rejects: pd.DataFrame, per_reason: int = PER_REASON) -> Image.Image | None:
    """The grid of `rejects` (rows with reason, rainy_path, clean_path and the score columns); None if empty."""
    blocks = [(r, rejects[rejects["reason"] == r].head(per_reason)) for r in ORDER if (rejects["reason"] == r).any()]
    if not blocks:
        return None
    height = sum(TITLE_H + ROW_H * len(b) for _, b in blocks) + 4
    canvas = Image.new("RGB", (2 * THUMB + TEXT_W + 16, height), "white")
    draw = ImageDraw.Draw(canvas)
    y = 2
    for reason, block in blocks:
        check = CHECKS.get(reason)
        total = int((rejects["reason"] == reason).sum())
        draw.text((4, y + 4), f"{reason}: {total} pair(s) ({check.column} {'>' if check.fails == 'above' else '<'} "
                              f"threshold)   input | target | score", fill="black")
        y += TITLE_H
        for row in block.itertuples(index=False):
            canvas.paste(_thumb(row.rainy_path), (4, y))
            canvas.paste(_thumb(row.clean_path), (THUMB + 8, y))
            lines = [str(row.pair_id)[:36], f"{check.column} = {getattr(row, check.column):.3g}"]
            lines += [f"{CHECKS.get(n).column} {getattr(row, CHECKS.get(n).column):.3g}" for n in ORDER if n != reason]
            draw.multiline_text((2 * THUMB + 14, y + 2), "\n".join(lines), fill="black", spacing=3)
            y += ROW_H
    return canvas


def write_reject_grid(run: RunLayout, out: Path) -> Path | None:
    """Write the grid of the run's sanity rejects to `out` (removed when there is none)."""
    from .stage import sanity_rejects

    grid = draw_grid(sanity_rejects(run))
    if grid is None:
        out.unlink(missing_ok=True)
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    grid.save(tmp, format="PNG")
    tmp.replace(out)
    return out
