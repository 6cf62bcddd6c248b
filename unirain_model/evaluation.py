"""Test-set evaluation: PSNR and SSIM per test set and degradation type, beside the input's own.

A deraining figure means little alone: the rainy input already scores something against its target,
and a model that loses to it makes images worse. So every evaluation scores the **input** (rainy vs
target, same metric code and protocol) beside the model and reports the **gain** (model − input) in
dB and SSIM. The input's scores do not depend on the model: they are computed once per pair and
protocol and cached for the process (`input_scores`), so comparing several models costs one pass.

Whole test images go through the network (it reflect-pads to its stride and crops back), never
cropped, except that the `released` protocol centre-crops both images to a multiple of 16 first, as
the authors' released test.py does (see `metrics.py` for both protocols). Very large images can go
through tiles (`tile`) to bound memory. A pair that cannot be read is skipped, counted and reported.
A few images per type also go into before/after grids (input | output | target, `previews.py`).

Test sets: a paper-layout folder is one test set named after the folder; a manifest contributes one
test set per `source`. Every declared degradation type in the data gets its row (the four rain types,
snow, fog: in declaration order), or only the run's `types` when given.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch

from data_manifests import all_types
from data_manifests.paths import confined_join, safe_component
from unirain_model.data import BadImage, load_pair, read_pairs
from unirain_model.inference import derain_array, to_uint8
from unirain_model.metrics import PROTOCOL_NOTES, check_protocol, prepare_pair, score
from unirain_model.previews import PreviewCollector

METRICS = ("psnr", "ssim", "psnr_y", "ssim_y")
INPUT_METRICS = tuple(f"input_{m}" for m in METRICS)
GAIN_METRICS = tuple(f"gain_{m}" for m in METRICS)


def collect_test_sets(data: Iterable[str | Path] = (), manifests: Iterable[str | Path] = (),
                      types: Iterable[str] | None = None) -> pd.DataFrame:
    """Pairs of every test set, with a `test_set` column (only `types` when given)."""
    frames = []
    for folder in data:
        f = read_pairs(folder, source=Path(folder).name, types=types)
        frames.append(f.assign(test_set=Path(folder).resolve().name))
    for m in manifests:
        f = read_pairs(m, types=types)
        frames.append(f.assign(test_set=f["source"].astype(str)))
    if not frames:
        raise ValueError("nothing to evaluate: give a test folder or a manifest")
    return pd.concat(frames, ignore_index=True)


def score_pair(out: np.ndarray, ref: np.ndarray, crop_border: int = 0, protocol: str = "basicsr") -> dict[str, float]:
    """`metrics.score`: psnr, ssim, psnr_y, ssim_y of `out` against `ref` under `protocol`."""
    return score(out, ref, protocol, crop_border)


# (rainy path, clean path, their sizes and mtimes, protocol, crop_border) -> input scores
_INPUT_CACHE: dict[tuple, dict[str, float]] = {}


def _file_key(path: str) -> tuple:
    st = os.stat(path)
    return (str(path), st.st_size, st.st_mtime_ns)


def input_scores(rainy_path: str, clean_path: str, rainy: np.ndarray, clean: np.ndarray,
                 protocol: str = "basicsr", crop_border: int = 0) -> dict[str, float]:
    """Scores of the rainy image itself (already prepared for `protocol`) against its target, as
    `input_<metric>`; cached per file version, so a test set's input row is computed once per process."""
    key = (_file_key(rainy_path), _file_key(clean_path), protocol, crop_border)
    if key not in _INPUT_CACHE:
        _INPUT_CACHE[key] = {f"input_{m}": v for m, v in score(rainy, clean, protocol, crop_border).items()}
    return dict(_INPUT_CACHE[key])


def score_inputs(pairs: pd.DataFrame, protocol: str = "basicsr", crop_border: int = 0) -> pd.DataFrame:
    """Per-image scores of the rainy inputs alone (the "doing nothing" baseline), same columns as
    `evaluate_pairs` less the model's."""
    check_protocol(protocol)
    rows = []
    for r in pairs.itertuples(index=False):
        row = {"test_set": r.test_set, "rain_type": r.rain_type, "pair_id": r.pair_id, "name": Path(r.rainy_path).name,
               "protocol": protocol, "error": None}
        try:
            rainy, clean = prepare_pair(*load_pair(r.rainy_path, r.clean_path), protocol)
            row.update(input_scores(r.rainy_path, r.clean_path, rainy, clean, protocol, crop_border))
        except (BadImage, OSError, ValueError) as exc:
            warnings.warn(f"skipped test pair {r.rainy_path}: {exc}", stacklevel=2)
            row.update({m: np.nan for m in INPUT_METRICS}, error=str(exc))
        rows.append(row)
    return pd.DataFrame(rows)


def evaluate_pairs(model: torch.nn.Module, pairs: pd.DataFrame, crop_border: int = 0, tile: int | None = None,
                   tile_overlap: int = 32, save_dir: str | Path | None = None, amp: bool = False,
                   progress: Callable[[int, int], None] | None = None, protocol: str = "basicsr",
                   previews: PreviewCollector | None = None) -> pd.DataFrame:
    """Per-image scores: test_set, rain_type, pair_id, name, protocol, the model's psnr, ssim, psnr_y,
    ssim_y and the rainy input's input_psnr, ... (NaN + `error` for a pair that could not be read or
    scored). `previews` collects the first few images per type for the before/after grids."""
    from PIL import Image

    check_protocol(protocol)
    if hasattr(model, "set_record_routing"):
        model.set_record_routing(False)
    rows = []
    for i, r in enumerate(pairs.itertuples(index=False)):
        row = {"test_set": r.test_set, "rain_type": r.rain_type, "pair_id": r.pair_id, "name": Path(r.rainy_path).name,
               "protocol": protocol, "error": None}
        try:
            rainy, clean = prepare_pair(*load_pair(r.rainy_path, r.clean_path), protocol)
            scores_in = input_scores(r.rainy_path, r.clean_path, rainy, clean, protocol, crop_border)
            out = derain_array(model, rainy, tile=tile, overlap=tile_overlap, amp=amp)
            row.update(score(out, clean, protocol, crop_border), **scores_in)
            out8 = to_uint8(out)
            if save_dir is not None:
                # every part comes from the manifest: confined to save_dir (a bad one skips this pair)
                dst = confined_join(save_dir, r.test_set, r.rain_type,
                                    f"{safe_component(Path(r.rainy_path).stem)}.png", what="derained image")
                dst.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(out8).save(dst)
            if previews is not None:
                previews.offer((str(r.test_set), r.rain_type), rainy, out8, clean,
                               f"{row['name']}: {scores_in['input_psnr']:.2f} -> {row['psnr']:.2f} dB")
        except (BadImage, ValueError) as exc:
            warnings.warn(f"skipped test pair {r.rainy_path}: {exc}", stacklevel=2)
            row.update({m: np.nan for m in (*METRICS, *INPUT_METRICS)}, error=str(exc))
        rows.append(row)
        if progress:
            progress(i + 1, len(pairs))
    return pd.DataFrame(rows)


def summarize(per_image: pd.DataFrame) -> pd.DataFrame:
    """Mean scores per (test_set, rain_type), an `all` row per test set (mean over its images), and an
    overall `all`/`all` row over several test sets. Model, input and gain = model − input are means
    over the same images (pairs scored for both)."""
    ok = per_image[per_image["error"].isna()] if "error" in per_image else per_image
    type_order = {t: i for i, t in enumerate(all_types())}
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
    protocols = sorted(set(everything["protocol"].dropna())) if "protocol" in everything else []
    row = {"test_set": test_set, "rain_type": rain_type, "protocol": ",".join(protocols) or "basicsr",
           "images": int(len(ok)), "skipped": int(len(everything) - len(ok))}
    for m in METRICS:
        model = float(ok[m].mean()) if len(ok) else float("nan")
        base = float(ok[f"input_{m}"].mean()) if len(ok) and f"input_{m}" in ok else float("nan")
        row[m], row[f"input_{m}"], row[f"gain_{m}"] = model, base, model - base
    return row


def _protocol_of(summary: pd.DataFrame) -> str:
    names = sorted(set(summary["protocol"])) if "protocol" in summary and len(summary) else ["basicsr"]
    return ",".join(names)


def _num(v: float, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def format_table(summary: pd.DataFrame) -> str:
    """The readable table: per test set and rain type, PSNR and SSIM of the model, of the rainy input
    and the gain, side by side; the protocol named on top. (Y-channel figures are in the reports.)"""
    protocol = _protocol_of(summary)
    notes = "; ".join(PROTOCOL_NOTES.get(p, p) for p in protocol.split(","))
    skipped = "skipped" in summary and int(summary["skipped"].fillna(0).sum()) > 0
    head = (f"{'test set':<16} {'type':<13} {'images':>6}" + (f" {'skipped':>7}" if skipped else "")
            + f" | {'PSNR':>6} {'input':>6} {'gain':>6} | {'SSIM':>6} {'input':>6} {'gain':>7}")
    lines = [f"protocol: {protocol} ({notes})", head, "-" * len(head)]
    previous = None
    for r in summary.to_dict("records"):
        ts = "" if r["test_set"] == previous else str(r["test_set"])
        previous = r["test_set"]
        if r["rain_type"] == "all":
            lines.append("-" * len(head))
        lines.append(
            f"{ts:<16} {r['rain_type']:<13} {r['images']:>6}" + (f" {r['skipped']:>7}" if skipped else "")
            + f" | {_num(r['psnr'], '6.2f')} {_num(r.get('input_psnr'), '6.2f')} {_num(r.get('gain_psnr'), '+6.2f')}"
            + f" | {_num(r['ssim'], '6.4f')} {_num(r.get('input_ssim'), '6.4f')} {_num(r.get('gain_ssim'), '+7.4f')}")
    lines.append("PSNR in dB; input = the rainy image scored against its target; gain = model - input "
                 "(negative: the model makes images worse).")
    lines += verdicts(summary)
    return "\n".join(lines)


def verdicts(summary: pd.DataFrame) -> list[str]:
    """One line per test set: does the model beat doing nothing, on average and per rain type?"""
    out = []
    for ts in summary.loc[summary["test_set"] != "all", "test_set"].unique():
        part = summary[summary["test_set"] == ts]
        avg = part[part["rain_type"] == "all"]
        types = part[part["rain_type"] != "all"]
        if avg.empty or "gain_psnr" not in part:
            continue
        g = float(avg["gain_psnr"].iloc[0])
        better = int((types["gain_psnr"] > 0).sum())
        word = "beats" if g > 0 else "does not beat"
        out.append(f"{ts}: the model {word} the rainy input on average PSNR ({g:+.2f} dB) and is better on "
                   f"{better} of {len(types)} types.")
    return out


def format_markdown(summary: pd.DataFrame, grids: dict[str, str] | None = None) -> str:
    """The same table in Markdown (reports, Prefect artifacts), with Y-channel columns when present;
    `grids` maps a caption to an image link or data URI shown below the table."""
    protocol = _protocol_of(summary)
    has_y = summary[["psnr_y"]].notna().any().item() if "psnr_y" in summary and len(summary) else False
    cols = ["test set", "type", "images", "PSNR", "input", "gain", "SSIM", "input", "gain"]
    if has_y:
        cols += ["PSNR-Y", "input", "gain", "SSIM-Y", "input", "gain"]
    out = [f"Protocol: **{protocol}** ({'; '.join(PROTOCOL_NOTES.get(p, p) for p in protocol.split(','))}). "
           "*input* = the rainy image scored against its target; *gain* = model − input.", "",
           "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in summary.to_dict("records"):
        cells = [str(r["test_set"]), f"**{r['rain_type']}**" if r["rain_type"] == "all" else r["rain_type"], str(r["images"]),
                 _num(r["psnr"], ".2f"), _num(r.get("input_psnr"), ".2f"), _num(r.get("gain_psnr"), "+.2f"),
                 _num(r["ssim"], ".4f"), _num(r.get("input_ssim"), ".4f"), _num(r.get("gain_ssim"), "+.4f")]
        if has_y:
            cells += [_num(r["psnr_y"], ".2f"), _num(r.get("input_psnr_y"), ".2f"), _num(r.get("gain_psnr_y"), "+.2f"),
                      _num(r["ssim_y"], ".4f"), _num(r.get("input_ssim_y"), ".4f"), _num(r.get("gain_ssim_y"), "+.4f")]
        out.append("| " + " | ".join(cells) + " |")
    for caption, link in (grids or {}).items():
        out += ["", f"**{caption}** (input | output | target)", "", f"![{caption}]({link})"]
    return "\n".join(out) + "\n"


def report_base(out: str | Path) -> Path:
    """OUT without a .csv/.json suffix: the stem every report file is named after."""
    out = Path(out)
    return out.with_suffix("") if out.suffix.lower() in (".csv", ".json", ".md") else out


def grid_folder(out: str | Path) -> Path:
    """Where the before/after grids of report OUT go: OUT_grids/<test set>/<rain type>.png."""
    base = report_base(out)
    return base.with_name(f"{base.name}_grids")


def write_reports(summary: pd.DataFrame, per_image: pd.DataFrame, out: str | Path, meta: dict | None = None) -> list[Path]:
    """`out` with .csv/.json/.md (or no suffix): writes OUT.csv (summary), OUT.json (summary, per
    image and `meta`), OUT.images.csv (per image) and OUT.md (the readable table, protocol named,
    the grids in `meta["grids"]` linked)."""
    base = report_base(out)
    base.parent.mkdir(parents=True, exist_ok=True)
    csv_path, json_path, md_path = base.with_suffix(".csv"), base.with_suffix(".json"), base.with_suffix(".md")
    img_path = Path(f"{base}.images.csv")
    summary.to_csv(csv_path, index=False)
    per_image.to_csv(img_path, index=False)

    def clean(records):
        return [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()} for r in records]

    meta = {"protocol": _protocol_of(summary), **(meta or {})}
    json_path.write_text(json.dumps({"meta": meta, "summary": clean(summary.to_dict("records")),
                                     "images": clean(per_image.to_dict("records"))}, indent=1, default=str))
    grids = {}
    for g in meta.get("grids") or []:
        g = Path(g)
        rel = os.path.relpath(g, base.parent)
        grids[f"{g.parent.name} / {g.stem}"] = Path(rel).as_posix()
    title = "# Evaluation\n\n" + (f"Checkpoint: `{meta['checkpoint']}` (iteration {meta.get('iteration')})\n\n"
                                    if meta.get("checkpoint") else "")
    md_path.write_text(title + format_markdown(summary, grids))
    return [csv_path, json_path, img_path, md_path]


def evaluate_checkpoint(checkpoint: str | Path, data: Iterable[str | Path] = (), manifests: Iterable[str | Path] = (),
                        device: str = "auto", crop_border: int = 0, tile: int | None = None, tile_overlap: int = 32,
                        save_dir: str | Path | None = None, progress=None, protocol: str = "basicsr",
                        grid_dir: str | Path | None = None, grid_images: int = 3,
                        types: Iterable[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Load a checkpoint, score every test set (model and input); returns (summary, per_image, meta)
    where meta is the checkpoint's metadata plus `protocol` and `grids` (the PNGs written to
    `grid_dir`, `grid_images` images per test set and rain type). `types`: only these degradation types
    (a run config's `types:`); None = every declared type in the data."""
    from unirain_model.checkpoint import load_model
    from unirain_model.trainer import resolve_device

    check_protocol(protocol)
    if protocol == "released" and crop_border:
        raise ValueError("evaluate.crop_border: the released protocol has no border crop (it crops to multiples of 16)")
    dev = resolve_device(device)
    pairs = collect_test_sets(data, manifests, types)
    model, meta = load_model(checkpoint, dev)
    previews = PreviewCollector(per_key=grid_images) if grid_dir is not None and grid_images > 0 else None
    per_image = evaluate_pairs(model, pairs, crop_border, tile, tile_overlap, save_dir, amp=False, progress=progress,
                               protocol=protocol, previews=previews)
    grids = previews.write(grid_dir, title=f"{protocol}, iteration {meta.get('iteration')}") if previews else []
    return summarize(per_image), per_image, {**meta, "protocol": protocol, "grids": [str(g) for g in grids]}


@torch.no_grad()
def input_validation(loaders: dict, device: torch.device, reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t
                     ) -> dict[str, dict[str, float]]:
    """The rainy inputs' own mean L1 and PSNR per type on the training validation loaders (the same
    crops and formula as `trainer.validate`): what the validation curves must beat. `reduce` sums
    across DDP ranks."""
    out = {}
    for rain_type, loader in loaders.items():
        acc = torch.zeros(3, dtype=torch.float64, device=device)
        for batch in loader:
            if batch is None:
                continue
            x, y = (t.to(device) for t in batch)
            l1 = (x - y).abs().flatten(1).mean(1)
            mse = ((x - y) ** 2).flatten(1).mean(1).clamp_min(1e-10)
            acc += torch.stack([l1.sum().double(), (10 * torch.log10(1.0 / mse)).sum().double(),
                                torch.tensor(float(len(l1)), dtype=torch.float64, device=device)])
        acc = reduce(acc)
        n = acc[2].item()
        out[rain_type] = {"l1": acc[0].item() / n if n else float("nan"), "psnr": acc[1].item() / n if n else float("nan")}
    return out
