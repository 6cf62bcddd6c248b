"""The closed loop, in miniature: does distilling (with the sanity stage) beat training on everything?

    .venv/bin/python benchmarks/bench_distill_quality.py --out /tmp/bench_dq [--per-type 24] [--iters 300] [--seeds 0,1]

1. Pool (`unirain synth`, 128x128, the four rain types, training photos only, as in bench_quality):
   source `clean` (every pair good) and source `damaged` (half of its pairs damaged by
   `tasks/sanity/planted.py`, the kinds in turn at strong settings: 5 px shift, another scene, blur
   sigma 2.5, a 20 % colour cast, input = target, the target re-encoded at JPEG q20). A synthetic gallery. A clean held-out test set from
   the test photos (seed 1).
2. `distill` with the tiny RANDOM-WEIGHT models of the demo (tasks/offline/tiny_models), every stage
   through the stage runner in this process (no Prefect): ingest, leak_check, sanity, caption, embed,
   retrieve, vote, select. The random judges vote at random, so any effect here is the sanity stage's
   plus a random subsample, which is what a miniature can show.
3. Train unirain-s with the `train:` recipe of configs/demo.yaml for `--iters` iterations on
   (a) every candidate (RUN/manifests/candidates) and (b) the distilled pairs (RUN/manifests/distilled),
   one torch thread, per seed; score both on the test set (BasicSR protocol), PSNR/SSIM per type.
Output: a markdown table (printed, and `--out/quality.md`) with (b) − (a) per seed and on average.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STRONG = (("misaligned", "shift 5 px"), ("unrelated_target", "other scene 100%"), ("blurry_target", "blur sigma 2.5"),
          ("color_shift", "cast 0.2"), ("no_rain", "input = target"), ("jpeg_target", "JPEG q20"))


def build_pool(out: Path, per_type: int, size: tuple[int, int]) -> dict:
    """Clean source, damaged source (half damaged), gallery, test set; returns what was planted."""
    from PIL import Image

    from benchmarks.bench_quality import export_photos
    from tasks.offline.synth import synthesize_gallery, synthesize_paired
    from tasks.offline.synth.writer import write_png
    from tasks.sanity.planted import DAMAGES

    data = out / "data"
    planted_file = data / "planted.json"
    if planted_file.exists():
        return json.loads(planted_file.read_text())
    train_photos, test_photos = export_photos(out / "photos")
    synthesize_paired(data / "clean", per_type=per_type, seed=0, size=size, clean_dir=train_photos)
    items = synthesize_paired(data / "raw_damaged", per_type=per_type, seed=3, size=size, clean_dir=train_photos)
    synthesize_gallery(data / "gallery", n=8 * 4, seed=1, size=size, clean_dir=train_photos)
    synthesize_paired(data / "test", per_type=8, seed=1, size=size, clean_dir=test_photos)
    load = lambda p: np.asarray(Image.open(p).convert("RGB"), np.float32) / 255.0  # noqa: E731
    planted = {}
    for i, item in enumerate(items):
        rainy, target = load(item.input_path), load(item.target_path)
        rel = item.input_path.relative_to(data / "raw_damaged")
        if i % 2:
            kind, label = STRONG[(i // 2) % len(STRONG)]
            other = load(items[(i + 3) % len(items)].target_path)
            rainy, target = dict(DAMAGES[kind])[label](rainy, target, other)
            planted[str(rel)] = kind
        write_png(data / "damaged" / rel, rainy)
        write_png(data / "damaged" / rel.parent.parent / "target" / rel.name, target)
    planted_file.write_text(json.dumps(planted, indent=1))
    return planted


def run_config(out: Path):
    """The demo's run config (configs/demo.yaml) with this pool's sources and gallery and freshly built
    tiny models; and its `train:` section (the recipe)."""
    import yaml

    from tasks.config import load_config_data, parse_run_config
    from tasks.offline.tiny_models import make_tiny_models

    data = load_config_data(ROOT / "configs" / "demo.yaml")
    data = {k: v for k, v in data.items() if k != "extends"}
    recipe = data.get("train") or {}
    data["sources"] = [f"unirain.clean={out / 'data' / 'clean'}", f"unirain.damaged={out / 'data' / 'damaged'}"]
    data["gallery"] = [str(out / "data" / "gallery")]
    written = out / "models" / "config.yaml"
    models = (yaml.safe_load(written.read_text()) if written.exists()
              else make_tiny_models(out / "models", seed=0, base={k: v for k, v in data.items() if k != "models"}))["models"]
    return parse_run_config({**data, "models": models}, origin="bench_distill_quality"), recipe


def distill(out: Path, cfg) -> Path:
    from tasks.pipeline import STAGE_ORDER
    from tasks.stage import make_stage, prepare_run, run_stage

    run, n = prepare_run(out / "run", cfg)
    for name in STAGE_ORDER:
        print(" ", run_stage(make_stage(name, cfg, n), run).line(), flush=True)
    return out / "run"


def train_and_score(folder: Path, data: Path, test: Path, recipe: dict, iters: int, seed: int) -> dict:
    import torch

    torch.set_num_threads(1)
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    from unirain_model.ablation import per_type, score_checkpoint, train_variant
    from unirain_model.config import parse_train_config
    from unirain_model.evaluation import collect_test_sets

    section = {**recipe, "iters": iters, "seed": seed, "device": "cpu", "num_workers": 0, "ckpt_every": iters,
               "keep_checkpoints": 1, "eval_every": max(1, iters // 6), "log_every": max(1, iters // 6)}
    cfg = parse_train_config(section, origin="configs/demo.yaml")
    model = ROOT / "configs" / str(recipe.get("model", "model/unirain-s.yaml"))
    started = time.perf_counter()
    result = train_variant(cfg, model, folder, data)
    scores = per_type(score_checkpoint(result.checkpoint, collect_test_sets(data=[str(test)])))
    out = {"seed": seed, "iters": result.iteration, "wall_s": time.perf_counter() - started, "scores": scores}
    done.write_text(json.dumps(out, indent=1))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_dq"))
    ap.add_argument("--per-type", type=int, default=24)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--seeds", default="0,1")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.perf_counter()
    planted = build_pool(args.out, args.per_type, (args.size, args.size))
    cfg, recipe = run_config(args.out)
    run = distill(args.out, cfg)
    import pandas as pd

    from data_manifests import read_manifest

    cands = read_manifest(run / "manifests" / "candidates", "candidates")
    dist = read_manifest(run / "manifests" / "distilled", "distilled")
    rejects = read_manifest(run / "manifests" / "rejects", "rejects")
    sanity = rejects[rejects["stage"] == "sanity"]
    name = cands.set_index("pair_id")["rainy_path"].to_dict()
    src = cands.set_index("pair_id")["source"].to_dict()
    caught = {str(name[i]) for i, s in zip(sanity["item_id"], sanity["source"]) if src.get(i) == "unirain.damaged"}
    lines = [f"pool: {len(cands)} candidates ({(cands['source'] == 'unirain.damaged').sum()} in the damaged source, "
             f"{len(planted)} of them damaged); sanity rejected {len(sanity)} "
             f"({', '.join(f'{r}: {n}' for r, n in sanity['reason'].value_counts().items())}); "
             f"caught {len(caught & set(planted))} of {len(planted)} planted, {len(caught - set(planted))} good pairs of "
             f"the damaged source, {int((sanity['item_id'].map(src) == 'unirain.clean').sum())} of the clean source; "
             f"distilled {len(dist)} pairs ({int(dist['pair_id'].map(src).eq('unirain.damaged').sum())} from the "
             f"damaged source, {sum(1 for p, s in zip(dist['rainy_path'], dist['source']) if s == 'unirain.damaged' and str(p) in planted)} of them damaged)"]
    print(lines[0], flush=True)
    test = args.out / "data" / "test"
    results = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for arm, data in (("a all candidates", run / "manifests" / "candidates"), ("b distilled", run / "manifests" / "distilled")):
            r = train_and_score(args.out / "train" / f"{arm.split()[0]}_seed{seed}", data, test, recipe, args.iters, seed)
            results.append({"arm": arm, **r})
            print(f"  {arm} seed {seed}: avg PSNR {r['scores']['psnr_avg']:.3f} ({r['wall_s']:.0f} s)", flush=True)
    from unirain_model.ablation import input_scores, per_type
    from unirain_model.evaluation import collect_test_sets

    types = ["day_streak", "day_drop", "night_streak", "night_drop"]
    frame = pd.DataFrame([{"arm": r["arm"], "seed": r["seed"], **r["scores"]} for r in results])
    lines += ["", "| arm | seed | " + " | ".join(f"{t} PSNR/SSIM" for t in types) + " | avg PSNR/SSIM |",
              "|---|---|" + "---|" * (len(types) + 1)]
    try:
        inp = per_type(input_scores(collect_test_sets(data=[str(test)])))  # the rainy image itself as the output
        lines.append("| input (no deraining) | | " + " | ".join(f"{inp[f'psnr_{t}']:.2f} / {inp[f'ssim_{t}']:.4f}" for t in types)
                     + f" | {inp['psnr_avg']:.2f} / {inp['ssim_avg']:.4f} |")
    except Exception as exc:  # noqa: BLE001 - the input row is context, not the result
        print(f"(no input row: {exc})")
    for r in frame.itertuples(index=False):
        d = r._asdict()
        lines.append(f"| {r.arm} | {r.seed} | " + " | ".join(f"{d[f'psnr_{t}']:.2f} / {d[f'ssim_{t}']:.4f}" for t in types)
                     + f" | {r.psnr_avg:.2f} / {r.ssim_avg:.4f} |")
    gains = []
    for seed, g in frame.groupby("seed"):
        a, b = g[g["arm"].str.startswith("a")].iloc[0], g[g["arm"].str.startswith("b")].iloc[0]
        gains.append((seed, b["psnr_avg"] - a["psnr_avg"], b["ssim_avg"] - a["ssim_avg"],
                      {t: b[f"psnr_{t}"] - a[f"psnr_{t}"] for t in types}))
    lines.append("")
    for seed, dp, ds, per in gains:
        lines.append(f"gain of (b) over (a), seed {seed}: {dp:+.3f} dB / {ds:+.4f} SSIM (" +
                     ", ".join(f"{t} {v:+.2f}" for t, v in per.items()) + ")")
    lines.append(f"mean gain: {np.mean([g[1] for g in gains]):+.3f} dB / {np.mean([g[2] for g in gains]):+.4f} SSIM; "
                 f"total {time.perf_counter() - started:.0f} s")
    text = "\n".join(lines)
    print(text)
    (args.out / "quality.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
