"""Model ablations: train several model configs on the same data with one recipe, score them on the same
test pairs, and tabulate in the paper's format (config, PSNR and SSIM per rain type, and their average).

Pure functions over the trainer and the evaluation code (no Prefect): `unirain ablate` and
`benchmarks/bench_quality.py` both use them.

    path = resolve_variant("unirain-soft-soft")            # configs/model/unirain-soft-soft.yaml
    result = train_variant(cfg, path, RUN / "ablation" / "unirain-soft-soft", data)
    scores = score_checkpoint(result.checkpoint, test_pairs)  # per image
    table = paper_table({"input": input_scores(test_pairs), "unirain-soft-soft": scores})

A variant's folder is an ordinary training run folder, so training resumes, and a finished variant is
not retrained (the trainer returns at once). Its scores are cached next to its checkpoint, keyed by the
checkpoint file and the test pairs, so a rerun re-scores nothing that is unchanged.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from data_manifests.paths import confined_join
from data_manifests import all_types
from unirain_model.config import REPO_ROOT, ConfigError, TrainConfig

MODEL_DIR = REPO_ROOT / "configs" / "model"
SCORES = ("psnr", "ssim")
INPUT_ROW = "input (no deraining)"


def resolve_variant(ref: str) -> Path:
    """A model config from a variant name (`configs/model/<name>.yaml`) or a path to a YAML."""
    for path in (Path(ref), MODEL_DIR / f"{ref}.yaml", MODEL_DIR / ref):
        if path.is_file():
            return path.resolve()
    known = sorted(p.stem for p in MODEL_DIR.glob("*.yaml"))
    raise ConfigError(f"variant {ref!r}: no model config {MODEL_DIR / (ref + '.yaml')} (known: {', '.join(known)})")


def variant_name(ref: str) -> str:
    """A folder-safe name: the YAML's stem for paths, the name itself otherwise."""
    return Path(ref).stem if ref.endswith((".yaml", ".yml")) else ref


def train_variant(cfg: TrainConfig, model_path: str | Path, run_dir: str | Path, data: str | Path,
                  progress=None, show_progress_bar: bool = False):
    """`trainer.train` with `cfg`'s recipe and this model config, in its own run folder (resumes)."""
    from unirain_model.trainer import train

    return train(cfg.model_copy(update={"model": str(model_path)}), run_dir, data, progress=progress,
                 show_progress_bar=show_progress_bar)


def _pairs_key(pairs: pd.DataFrame) -> str:
    ids = ",".join(sorted(pairs["pair_id"].astype(str)))
    return hashlib.blake2b(ids.encode(), digest_size=8).hexdigest()


def score_checkpoint(checkpoint: str | Path, pairs: pd.DataFrame, device: str = "cpu", tile: int | None = None,
                     cache: str | Path | None = None, protocol: str = "basicsr") -> pd.DataFrame:
    """Per-image PSNR/SSIM (the evaluation module's protocol) of a checkpoint on `pairs` (a frame from
    `evaluation.collect_test_sets`). With `cache` (a CSV path) an unchanged checkpoint + pair set is read
    back instead of being scored again."""
    from unirain_model.checkpoint import load_model, resolve_weights
    from unirain_model.evaluation import evaluate_pairs
    from unirain_model.trainer import resolve_device

    weights = resolve_weights(checkpoint)
    key = f"{weights.name}:{_pairs_key(pairs)}:{protocol}"
    if cache is not None and Path(cache).is_file():
        frame = pd.read_csv(cache)
        if "cache_key" in frame and (frame["cache_key"] == key).all():
            return frame.drop(columns="cache_key")
    model, _ = load_model(weights, resolve_device(device))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # unreadable pairs are counted in the frame
        frame = evaluate_pairs(model, pairs, tile=tile, protocol=protocol)
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        frame.assign(cache_key=key).to_csv(cache, index=False)
    return frame


def input_scores(pairs: pd.DataFrame, protocol: str = "basicsr") -> pd.DataFrame:
    """Per-image scores of doing nothing (the rainy input against its target, same protocol), with the
    model's column names so `paper_table` takes it as a row."""
    from unirain_model.evaluation import score_inputs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        frame = score_inputs(pairs, protocol=protocol)
    return frame.rename(columns={f"input_{m}": m for m in ("psnr", "ssim", "psnr_y", "ssim_y")})


def per_type(scores: pd.DataFrame) -> dict[str, float]:
    """{psnr_<type>, ssim_<type>, psnr_avg, ssim_avg}: means per rain type, and the average of the
    type means (each type counts once, as the paper averages its test sets)."""
    out: dict[str, float] = {}
    types = [t for t in all_types() if t in set(scores["rain_type"])]  # every declared type (snow, fog too)
    for m in SCORES:
        means = [float(scores.loc[scores["rain_type"] == t, m].mean()) for t in types]
        for t, v in zip(types, means):
            out[f"{m}_{t}"] = v
        out[f"{m}_avg"] = float(np.nanmean(means)) if means else float("nan")
    return out


def paper_table(scores: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per config (in the given order): config, PSNR/SSIM per type, average; plus the gain of
    the average over the input row when one is named `INPUT_ROW`."""
    rows = [{"config": name, **per_type(frame)} for name, frame in scores.items()]
    table = pd.DataFrame(rows)
    if INPUT_ROW in scores:
        base = table.loc[table["config"] == INPUT_ROW].iloc[0]
        table["gain_psnr"] = table["psnr_avg"] - base["psnr_avg"]
        table["gain_ssim"] = table["ssim_avg"] - base["ssim_avg"]
    return table


def format_markdown(table: pd.DataFrame) -> str:
    """The table as markdown, PSNR/SSIM per type as `PSNR / SSIM` cells like the paper's tables."""
    types = [t for t in all_types() if f"psnr_{t}" in table]
    cols = [*types, "avg"]
    header = ["config", *[f"{c} PSNR / SSIM" for c in cols]]
    if "gain_psnr" in table:
        header.append("gain over input (dB / SSIM)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in table.to_dict("records"):
        cells = [str(r["config"])] + [f"{r[f'psnr_{c}']:.2f} / {r[f'ssim_{c}']:.4f}" for c in cols]
        if "gain_psnr" in table:
            cells.append(f"{r['gain_psnr']:+.2f} / {r['gain_ssim']:+.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scoring_pairs(data=(), manifests=(), train_data: str | Path | None = None,
               val_fraction: float = 0.05) -> tuple[pd.DataFrame, str]:
    """The pairs to score and how to name them: the given test folders/manifests, else the held-out
    validation split of `train_data` (the trainer's own split: never trained on)."""
    from unirain_model.data import read_pairs, split_train_val
    from unirain_model.evaluation import collect_test_sets

    if data or manifests:
        pairs = collect_test_sets(data, manifests)
        return pairs, ", ".join(sorted(pairs["test_set"].astype(str).unique()))
    if train_data is None:
        raise ValueError("no test data: give test folders/manifests or the training data")
    _, val = split_train_val(read_pairs(train_data), val_fraction)
    return val.assign(test_set="validation split"), f"the validation split of {train_data} (held out from training)"


def run_ablation(cfg: TrainConfig, run_dir: str | Path, data: str | Path, variants: list[str], pairs: pd.DataFrame,
                 device: str | None = None, progress_for=None, log=print, protocol: str = "basicsr") -> pd.DataFrame:
    """Train each variant in `RUN/ablation/<variant>/` (resuming; a finished one is not retrained), score
    it on `pairs`, and write `RUN/reports/ablation.{csv,md}`; returns the table (input row first).

    `progress_for(variant)` may return a trainer progress callback for that variant.
    """
    run_dir = Path(run_dir)
    paths = {variant_name(v): resolve_variant(v) for v in variants}  # every name checked before any training
    if len(paths) != len(variants):
        raise ConfigError(f"variants: a name appears twice in {variants}")
    scores = {INPUT_ROW: input_scores(pairs, protocol)}
    for name, path in paths.items():
        folder = confined_join(run_dir / "ablation", name, what="variant folder")  # a name may hold / or ..
        log(f"ablate: {name} ({path}) in {folder}")
        result = train_variant(cfg, path, folder, data, progress=progress_for(name) if progress_for else None)
        if result.checkpoint is None:
            raise ValueError(f"{name}: training wrote no checkpoint")
        scores[name] = score_checkpoint(result.checkpoint, pairs, device=device or cfg.device,
                                        cache=folder / "reports" / "ablation_scores.csv", protocol=protocol)
    table = paper_table(scores)
    reports = run_dir / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    table.to_csv(reports / "ablation.csv", index=False)
    return table


def write_markdown(table: pd.DataFrame, path: str | Path, cfg: TrainConfig, test_name: str,
                   protocol: str = "basicsr") -> str:
    text = (f"# Model ablation\n\nEach config trained {cfg.iters} iterations with the same recipe (batch "
            f"{cfg.batch_size}, crop {cfg.crop}, lr {cfg.lr}, sampler {cfg.sampler}, reweighting "
            f"{cfg.reweighting.kind}); scored on {test_name}, protocol `{protocol}`, RGB; the average is the "
            f"mean of the per-type means.\n\n{format_markdown(table)}\n")
    Path(path).write_text(text)
    return text
