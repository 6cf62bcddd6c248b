"""Test-set evaluation: PSNR and SSIM on RGB and Y, per test set and rain type.

Whole test images go through the network (it reflect-pads to its stride and crops back), never
cropped; outputs are clamped and rounded to uint8 like saved images, then scored with
`metrics.psnr` / `metrics.ssim` (BasicSR conventions). Very large images can go through tiles
(`tile`) to bound memory. A pair that cannot be read is skipped, counted and reported.

Test sets: a paper-layout folder is one test set named after the folder; a manifest contributes one
test set per `source`.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch

from data_manifests import RAIN_TYPES
from unirain_model.data import BadImage, load_pair, read_pairs
from unirain_model.inference import derain_array, to_uint8
from unirain_model.metrics import psnr, ssim

METRICS = ("psnr", "ssim", "psnr_y", "ssim_y")


def collect_test_sets(data: Iterable[str | Path] = (), manifests: Iterable[str | Path] = ()) -> pd.DataFrame:
    """Pairs of every test set, with a `test_set` column."""
    frames = []
    for folder in data:
        f = read_pairs(folder, source=Path(folder).name)
        frames.append(f.assign(test_set=Path(folder).resolve().name))
    for m in manifests:
        f = read_pairs(m)
        frames.append(f.assign(test_set=f["source"].astype(str)))
    if not frames:
        raise ValueError("nothing to evaluate: give a test folder or a manifest")
    return pd.concat(frames, ignore_index=True)


def score_pair(out: np.ndarray, ref: np.ndarray, crop_border: int = 0) -> dict[str, float]:
    return {
        "psnr": psnr(out, ref, crop_border), "ssim": ssim(out, ref, crop_border),
        "psnr_y": psnr(out, ref, crop_border, y_channel=True), "ssim_y": ssim(out, ref, crop_border, y_channel=True),
    }


def evaluate_pairs(model: torch.nn.Module, pairs: pd.DataFrame, crop_border: int = 0, tile: int | None = None,
                   tile_overlap: int = 32, save_dir: str | Path | None = None, amp: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Per-image scores: test_set, rain_type, pair_id, name, psnr, ssim, psnr_y, ssim_y (NaN + `error`
    for a pair that could not be read)."""
    from PIL import Image

    if hasattr(model, "set_record_routing"):
        model.set_record_routing(False)
    rows = []
    for i, r in enumerate(pairs.itertuples(index=False)):
        row = {"test_set": r.test_set, "rain_type": r.rain_type, "pair_id": r.pair_id, "name": Path(r.rainy_path).name}
        try:
            rainy, clean = load_pair(r.rainy_path, r.clean_path)
            out = to_uint8(derain_array(model, rainy, tile=tile, overlap=tile_overlap, amp=amp))
            row.update(score_pair(out, clean, crop_border))
            if save_dir is not None:
                dst = Path(save_dir) / str(r.test_set) / r.rain_type / f"{Path(r.rainy_path).stem}.png"
                dst.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(out).save(dst)
        except (BadImage, ValueError) as exc:
            warnings.warn(f"skipped test pair {r.rainy_path}: {exc}", stacklevel=2)
            row.update({m: np.nan for m in METRICS}, error=str(exc))
        rows.append(row)
        if progress:
            progress(i + 1, len(pairs))
    frame = pd.DataFrame(rows)
    if "error" not in frame:
        frame["error"] = None
    return frame


def summarize(per_image: pd.DataFrame) -> pd.DataFrame:
    """Mean scores per (test_set, rain_type), an `all` row per test set, and an overall mean."""
    ok = per_image[per_image["error"].isna()]
    type_order = {t: i for i, t in enumerate(RAIN_TYPES)}
    rows = []
    for ts in sorted(per_image["test_set"].unique()):
        part = per_image[per_image["test_set"] == ts]
        for t in sorted(part["rain_type"].unique(), key=lambda t: type_order.get(t, 99)):
            rows.append(_summary_row(ts, t, ok[(ok["test_set"] == ts) & (ok["rain_type"] == t)], part[part["rain_type"] == t]))
        rows.append(_summary_row(ts, "all", ok[ok["test_set"] == ts], part))
    if per_image["test_set"].nunique() > 1:
        rows.append(_summary_row("all", "all", ok, per_image))
    return pd.DataFrame(rows)


def _summary_row(test_set: str, rain_type: str, ok: pd.DataFrame, everything: pd.DataFrame) -> dict:
    row = {"test_set": test_set, "rain_type": rain_type, "images": int(len(ok)), "skipped": int(len(everything) - len(ok))}
    for m in METRICS:
        row[m] = float(ok[m].mean()) if len(ok) else float("nan")
    return row


def format_table(summary: pd.DataFrame) -> str:
    header = f"{'test set':<16} {'rain type':<13} {'images':>6} {'skipped':>7} {'PSNR':>7} {'SSIM':>7} {'PSNR-Y':>7} {'SSIM-Y':>7}"
    lines = [header, "-" * len(header)]
    for r in summary.itertuples(index=False):
        lines.append(f"{str(r.test_set):<16} {r.rain_type:<13} {r.images:>6} {r.skipped:>7} "
                     f"{r.psnr:>7.2f} {r.ssim:>7.4f} {r.psnr_y:>7.2f} {r.ssim_y:>7.4f}")
    return "\n".join(lines)


def write_reports(summary: pd.DataFrame, per_image: pd.DataFrame, out: str | Path, meta: dict | None = None) -> list[Path]:
    """`out` with .csv or .json (or no suffix): writes OUT.csv (summary), OUT.json (summary, per
    image and `meta`) and OUT.images.csv (per image)."""
    out = Path(out)
    base = out.with_suffix("") if out.suffix.lower() in (".csv", ".json") else out
    base.parent.mkdir(parents=True, exist_ok=True)
    csv_path, json_path, img_path = base.with_suffix(".csv"), base.with_suffix(".json"), Path(f"{base}.images.csv")
    summary.to_csv(csv_path, index=False)
    per_image.to_csv(img_path, index=False)

    def clean(records):
        return [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()} for r in records]

    json_path.write_text(json.dumps({"meta": meta or {}, "summary": clean(summary.to_dict("records")),
                                     "images": clean(per_image.to_dict("records"))}, indent=1, default=str))
    return [csv_path, json_path, img_path]


def evaluate_checkpoint(checkpoint: str | Path, data: Iterable[str | Path] = (), manifests: Iterable[str | Path] = (),
                        device: str = "auto", crop_border: int = 0, tile: int | None = None, tile_overlap: int = 32,
                        save_dir: str | Path | None = None, progress=None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Load a checkpoint, score every test set; returns (summary, per_image, checkpoint metadata)."""
    from unirain_model.checkpoint import load_model
    from unirain_model.trainer import resolve_device

    dev = resolve_device(device)
    pairs = collect_test_sets(data, manifests)
    model, meta = load_model(checkpoint, dev)
    per_image = evaluate_pairs(model, pairs, crop_border, tile, tile_overlap, save_dir, amp=False, progress=progress)
    return summarize(per_image), per_image, meta
