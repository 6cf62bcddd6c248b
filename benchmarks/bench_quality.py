"""Quality per compute: every model config trained the same way on the same synthetic data, scored on a
held-out synthetic test set made from different clean photos.

    .venv/bin/python benchmarks/bench_quality.py [--iters 600] [--seeds 0,1] [--workers 2 --threads 1]
    .venv/bin/python benchmarks/bench_quality.py --small          # a smoke run: seconds

1. Clean photos: the nine photos `unirain synth` ships with are split by scene: `TEST_PHOTOS` make the
   test set only, the rest the training set (both stereo-motorcycle views stay on the training side),
   so no test scene is ever trained on.
2. `unirain synth --clean <photos> --seed 0` writes the training set (`--per-type` pairs per rain type)
   and, with seed 1, the test set (`--test-per-type`). Both are reused by later runs.
3. Each row trains with the train: section of `--recipe` (default `benchmarks/quality_recipe.yaml`: the demo's
   learning rate, warm-up, crop, batch and reweighting, with Charbonnier ε = 0.01 at a constant lr) for `--iters` iterations, one run per seed (the data stay
   fixed; the seed changes initialisation and sampling), on CPU, and is scored on the whole test images
   with the evaluation code (BasicSR protocol). Runs go to `--out/runs/<row>/seed<S>/` and resume;
   finished runs are read back, so an interrupted benchmark continues.
4. Output (printed and written to `--out`): `quality.md`/`.csv`/`.json` — config, params, G MACs at
   256², wall and CPU s/iteration, PSNR/SSIM per type and average, gain over the input, spread across
   types, and the seed-to-seed noise; `coba_vs_uniform.png` — per-type validation-loss curves (relative to
   the input's own L1) of unirain-s with CoBa and with uniform weights, and the "converge together"
   number: the standard deviation across types of the relative loss drop 1 − L1_end/L1_input (lower =
   the types converged more evenly).

Rows: unirain-s (soft encoder / hard decoder) and the same size with soft/soft, hard/hard and dense
FFNs (`configs/model/unirain-s-*.yaml`), `nafnet-s` when `configs/model/nafnet-s.yaml` exists (a peer
design at a comparable budget), and unirain-s with uniform weights (the CoBa ablation). Timing: with
`--workers 2` two runs share the machine; wall s/it is then what one run gets under that load, CPU s/it
is the steadier number.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEST_PHOTOS = ("coffee", "china", "grace_hopper")
# (row label, model config under configs/model/, reweighting kind)
# (run in this order: the CoBa-vs-uniform pair and the peer first, so a benchmark cut short still has them)
ROWS = [
    ("unirain-s", "unirain-s", "coba"),
    ("unirain-s uniform", "unirain-s", "uniform"),
    ("nafnet-s", "nafnet-s", "coba"),
    ("unirain-s soft-soft", "unirain-s-soft-soft", "coba"),
    ("unirain-s hard-hard", "unirain-s-hard-hard", "coba"),
    ("unirain-s dense", "unirain-s-dense", "coba"),
]
COBA_ROW, UNIFORM_ROW = "unirain-s", "unirain-s uniform"


# ----------------------------------------------------------------------------- data
def export_photos(out: Path) -> tuple[Path, Path]:
    """The built-in clean photos as PNG files in `train/` and `test/` (split by `TEST_PHOTOS`)."""
    from tasks.offline.synth.clean_photos import BUILTIN_PHOTOS, builtin_photo

    train, test = out / "train", out / "test"
    for name in BUILTIN_PHOTOS:
        dst = (test if name in TEST_PHOTOS else train) / f"{name}.png"
        if not dst.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            builtin_photo(name).save(dst)
    return train, test


def synth(out: Path, per_type: int, seed: int, clean: Path, size: str) -> Path:
    """`unirain synth` into `out` (skipped when a finished set with the same arguments is there)."""
    marker = out / ".done.json"
    args = {"per_type": per_type, "seed": seed, "clean": str(clean), "size": size}
    if marker.is_file() and json.loads(marker.read_text()) == args:
        return out
    cmd = [sys.executable, "-m", "flows.cli", "synth", "--out", str(out), "--per-type", str(per_type),
           "--seed", str(seed), "--clean", str(clean), "--size", size]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    marker.write_text(json.dumps(args))
    return out


# ----------------------------------------------------------------------------- one run
def model_cost(model_path: str) -> dict:
    """Parameters and G MACs at 256² (counted on the meta device: no weights, no compute)."""
    import torch

    from unirain_model.archs import build_model, load_model_config
    from unirain_model.complexity import count_macs, count_params

    cfg = load_model_config(model_path)
    try:
        with torch.device("meta"):
            model = build_model(cfg)
        macs = count_macs(model)
    except Exception:  # an op without a meta kernel: count on a real CPU forward
        model = build_model(cfg)
        macs = count_macs(model)
    return {"params": count_params(model), "gmacs_256": macs / 1e9}


def val_input_l1(train_data: str, val_fraction: float, val_crop: int | None, max_per_type: int | None) -> dict:
    """Validation L1 of the rainy input itself per type (the trainer's validation pairs and crops)."""
    import torch

    from unirain_model.data import TypeTable, read_pairs, split_train_val, val_loaders
    from unirain_model.evaluation import input_validation

    _, val = split_train_val(read_pairs(train_data), val_fraction)
    loaders = val_loaders(TypeTable.from_frame(val), val_crop, 8, max_per_type)
    return {t: v["l1"] for t, v in input_validation(loaders, torch.device("cpu")).items()}


def run_job(job: dict) -> dict:
    """Train one (row, seed), score it on the test set; result.json in its folder makes it resumable."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(job["threads"])
    folder = Path(job["folder"])
    done = folder / "result.json"
    if done.is_file():
        result = json.loads(done.read_text())
        if result.get("job") == job["key"]:
            return result
    marker = folder / "job.json"
    if folder.exists() and (not marker.is_file() or marker.read_text() != job["key"]):
        shutil.rmtree(folder)  # another recipe's or model's run (this benchmark's own folder): start afresh
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(job["key"])
    import warnings

    import pandas as pd

    from unirain_model.ablation import per_type, score_checkpoint
    from unirain_model.config import load_run_yaml, parse_train_config
    from unirain_model.evaluation import collect_test_sets

    section = dict(load_run_yaml(job["recipe"]).get("train") or {})
    section.update(job["train_overrides"])
    cfg = parse_train_config(section, origin=job["recipe"])
    marks: list[tuple[int, float, float, bool]] = []

    def progress(it, total, info):
        marks.append((it, time.perf_counter(), time.process_time(), "val_l1" in info))

    t0, c0 = time.perf_counter(), time.process_time()
    marks.append((-1, t0, c0, False))
    from unirain_model.ablation import train_variant

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train_variant(cfg, job["model_path"], folder, job["train_data"], progress=progress)
    # s/it from log windows without a validation in them (their median; a resumed run has fewer windows)
    wall, cpu = [], []
    for (i0, w0, c0_, _), (i1, w1, c1, has_val) in zip(marks, marks[1:]):
        if i0 >= 0 and not has_val and i1 > i0:
            wall.append((w1 - w0) / (i1 - i0))
            cpu.append((c1 - c0_) / (i1 - i0))
    pairs = collect_test_sets(data=[job["test_data"]])
    scores = score_checkpoint(result.checkpoint, pairs, cache=folder / "reports" / "test_scores.csv")
    history = pd.read_csv(folder / "reports" / "training_history.csv")
    out = {
        "job": job["key"], "row": job["row"], "seed": job["seed"], "iters": result.iteration,
        "wall_s_per_it": statistics.median(wall) if wall else None,
        "cpu_s_per_it": statistics.median(cpu) if cpu else None,
        "train_wall_s": time.perf_counter() - t0 if result.resumed_from < result.iteration else None,
        "scores": per_type(scores),
        "final_val_l1": {t: float(history[f"val_l1_{t}"].iloc[-1]) for t in result.types},
        "history": str(folder / "reports" / "training_history.csv"),
        **model_cost(job["model_path"]),
    }
    done.write_text(json.dumps(out, indent=1))
    return out


# ----------------------------------------------------------------------------- tables
def converge_together(final: dict, start: dict) -> tuple[float, float]:
    """(mean, std across types) of the relative validation-loss drop 1 − L1_end / L1_input."""
    drops = [1.0 - final[t] / start[t] for t in final]
    return float(statistics.fmean(drops)), float(statistics.pstdev(drops))


def summarize(results: list[dict], input_scores: dict, val_input: dict, types: list[str]) -> tuple[list[dict], float]:
    """One row per config (means over seeds) and the pooled seed-to-seed std of the average PSNR."""
    rows, pooled = [], []
    for label in dict.fromkeys(r["row"] for r in results):
        runs = [r for r in results if r["row"] == label]
        mean = {k: statistics.fmean(r["scores"][k] for r in runs) for k in runs[0]["scores"]}
        avgs = [r["scores"]["psnr_avg"] for r in runs]
        if len(avgs) > 1:
            pooled.append(statistics.variance(avgs))
        type_psnr = [mean[f"psnr_{t}"] for t in types]
        drops = [converge_together(r["final_val_l1"], val_input) for r in runs]
        rows.append({
            "config": label, "seeds": len(runs), "params_M": runs[0]["params"] / 1e6, "gmacs_256": runs[0]["gmacs_256"],
            "wall_s_per_it": _mean([r["wall_s_per_it"] for r in runs]), "cpu_s_per_it": _mean([r["cpu_s_per_it"] for r in runs]),
            **mean,
            "gain_psnr": mean["psnr_avg"] - input_scores["psnr_avg"], "gain_ssim": mean["ssim_avg"] - input_scores["ssim_avg"],
            "gain_min_type": min(mean[f"psnr_{t}"] - input_scores[f"psnr_{t}"] for t in types),
            "spread_psnr": max(type_psnr) - min(type_psnr),
            "seed_range_psnr": max(avgs) - min(avgs),
            "val_drop_mean": statistics.fmean(d[0] for d in drops), "val_drop_std": statistics.fmean(d[1] for d in drops),
        })
    return rows, math.sqrt(statistics.fmean(pooled)) if pooled else float("nan")


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else float("nan")


def format_table(rows: list[dict], input_scores: dict, types: list[str]) -> str:
    short = {"day_streak": "d-streak", "day_drop": "d-drop", "night_streak": "n-streak", "night_drop": "n-drop"}
    header = ["config", "params M", "G MACs 256²", "wall s/it", "CPU s/it",
              *[f"{short.get(t, t)} PSNR/SSIM" for t in types], "avg PSNR/SSIM", "gain dB / SSIM",
              "worst-type gain dB", "spread dB", "seed range dB", "val drop (std across types)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    inp = ["input (no deraining)", "", "", "", "", *[f"{input_scores[f'psnr_{t}']:.2f} / {input_scores[f'ssim_{t}']:.4f}" for t in types],
           f"{input_scores['psnr_avg']:.2f} / {input_scores['ssim_avg']:.4f}", "", "", "", "", ""]
    lines.append("| " + " | ".join(inp) + " |")
    for r in rows:
        cells = [r["config"] + (f" ({r['seeds']} seeds)" if r["seeds"] > 1 else ""), f"{r['params_M']:.2f}", f"{r['gmacs_256']:.2f}",
                 f"{r['wall_s_per_it']:.3f}", f"{r['cpu_s_per_it']:.3f}",
                 *[f"{r[f'psnr_{t}']:.2f} / {r[f'ssim_{t}']:.4f}" for t in types],
                 f"{r['psnr_avg']:.2f} / {r['ssim_avg']:.4f}", f"{r['gain_psnr']:+.2f} / {r['gain_ssim']:+.4f}",
                 f"{r['gain_min_type']:+.2f}", f"{r['spread_psnr']:.2f}", f"{r['seed_range_psnr']:.2f}" if r["seeds"] > 1 else "–",
                 f"{r['val_drop_mean']:.3f} ({r['val_drop_std']:.3f})"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def noise_lines(rows: list[dict], sigma: float) -> list[str]:
    """Which differences in average PSNR from unirain-s exceed twice the seed-to-seed noise."""
    base = next((r for r in rows if r["config"] == COBA_ROW), None)
    if base is None or not math.isfinite(sigma):
        return ["noise: one seed per row, no estimate (run with --seeds 0,1)"]
    # Each row is a mean over its seeds; the difference of two such means has std ≈ sigma·sqrt(2/n).
    lines = [f"seed-to-seed std of the average PSNR (pooled over rows): {sigma:.3f} dB"]
    for r in rows:
        if r is base:
            continue
        d = r["psnr_avg"] - base["psnr_avg"]
        noise = 2 * sigma * math.sqrt(1 / r["seeds"] + 1 / base["seeds"])
        verdict = "beyond noise" if abs(d) > noise else "within noise"
        lines.append(f"{r['config']} − {COBA_ROW}: {d:+.2f} dB ({verdict}; 2σ of the difference = {noise:.2f} dB)")
    return lines


def plot_curves(results: list[dict], val_input: dict, types: list[str], path: Path) -> Path | None:
    """Per-type validation L1 / input L1 over iterations: CoBa solid, uniform dashed, one colour a type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    runs = [r for r in results if r["row"] in (COBA_ROW, UNIFORM_ROW)]
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    colours = dict(zip(types, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for r in runs:
        h = pd.read_csv(r["history"])
        style = "-" if r["row"] == COBA_ROW else "--"
        for t in types:
            label = f"{t} {'CoBa' if r['row'] == COBA_ROW else 'uniform'}" if r["seed"] == runs[0]["seed"] else None
            ax.plot(h["iteration"], h[f"val_l1_{t}"] / val_input[t], style, color=colours[t], label=label, alpha=0.85)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set(title="validation L1 relative to the rainy input, per rain type (solid CoBa, dashed uniform)",
           xlabel="iteration", ylabel="L1 / L1(input)")
    ax.legend(fontsize=7, ncol=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "runs" / "bench_quality"), help="data, runs and reports go here")
    p.add_argument("--recipe", default=str(ROOT / "benchmarks" / "quality_recipe.yaml"),
                   help="run config whose train: section is the recipe")
    p.add_argument("--iters", type=int, default=600)
    p.add_argument("--seeds", default="0,1", help="training seeds, comma-separated")
    p.add_argument("--per-type", type=int, default=200, help="training pairs per rain type")
    p.add_argument("--test-per-type", type=int, default=24, help="test pairs per rain type")
    p.add_argument("--size", default="128x128", help="synthetic image size WxH")
    p.add_argument("--evals", type=int, default=12, help="validations per run (the CoBa clock and the curves)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--workers", type=int, default=1, help="runs at a time (processes)")
    p.add_argument("--rows", help="comma list of row labels to run (default: all whose config exists)")
    p.add_argument("--one-seed-rows", default="", help="comma list of row labels that run the first seed only "
                   "(to fit a time budget; the noise estimate then comes from the other rows)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a train: key of the recipe for every row (YAML value), e.g. --set lr=0.001")
    p.add_argument("--small", action="store_true", help="a smoke run: tiny data, 4 iterations, one seed")
    args = p.parse_args(argv)
    if args.small:
        args.iters, args.seeds, args.per_type, args.test_per_type, args.size, args.evals = 4, "0", 6, 2, "64x64", 2
    return args


def main(argv=None) -> dict:
    import yaml

    args = parse_args(argv)
    out = Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    types = ["day_streak", "day_drop", "night_streak", "night_drop"]
    photos_train, photos_test = export_photos(out / "photos")
    t0 = time.perf_counter()
    train_data = synth(out / "data" / "train", args.per_type, 0, photos_train, args.size)
    test_data = synth(out / "data" / "test", args.test_per_type, 1, photos_test, args.size)
    print(f"data: {args.per_type}/type train from {len(list(photos_train.iterdir()))} photos, "
          f"{args.test_per_type}/type test from {len(list(photos_test.iterdir()))} held-out photos ({time.perf_counter() - t0:.0f} s)")

    wanted = set(args.rows.split(",")) if args.rows else None
    rows = [r for r in ROWS if (wanted is None or r[0] in wanted) and (ROOT / "configs" / "model" / f"{r[1]}.yaml").is_file()]
    skipped = [r[0] for r in ROWS if r not in rows and (wanted is None or r[0] in wanted)]
    if skipped:
        print(f"rows without a model config (skipped): {', '.join(skipped)}")
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    from unirain_model.config import load_run_yaml

    recipe = load_run_yaml(args.recipe)["train"]  # after its extends: chain
    eval_every = max(1, args.iters // args.evals)
    jobs = []
    one_seed = set(filter(None, args.one_seed_rows.split(",")))
    if unknown := one_seed - {r[0] for r in ROWS}:
        raise SystemExit(f"--one-seed-rows: unknown row(s) {sorted(unknown)} (rows: {', '.join(r[0] for r in ROWS)})")
    for label, config, kind in rows:
        for seed in seeds[:1] if label in one_seed else seeds:
            rw = {**(recipe.get("reweighting") or {}), "kind": kind}
            train_overrides = {"iters": args.iters, "eval_every": eval_every, "seed": seed, "device": "cpu",
                               "num_workers": 0, "log_every": max(1, eval_every // 4), "ckpt_every": args.iters,
                               "keep_checkpoints": 1, **overrides, "reweighting": {**rw, **overrides.get("reweighting", {})}}
            model_path = ROOT / "configs" / "model" / f"{config}.yaml"
            # what decides a run: a changed recipe or model config reruns it instead of reading it back
            key = json.dumps([config, model_path.read_text(), kind, seed, train_overrides, recipe, args.per_type,
                              args.size], sort_keys=True)
            jobs.append({"row": label, "seed": seed, "key": key, "threads": args.threads, "recipe": args.recipe,
                         "model_path": str(model_path), "train_overrides": train_overrides,
                         "folder": str(out / "runs" / label.replace(" ", "_") / f"seed{seed}"),
                         "train_data": str(train_data), "test_data": str(test_data)})
    print(f"{len(jobs)} runs ({len(rows)} rows, seeds {args.seeds}" + (f"; one seed: {', '.join(sorted(one_seed))}" if one_seed else "")
          + f"), {args.iters} iterations each, "
          f"{args.workers} at a time × {args.threads} thread(s)")
    t0 = time.perf_counter()
    results = []
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
            for res in pool.map(run_job, jobs):
                results.append(res)
                print(f"  {res['row']} seed {res['seed']}: {res['scores']['psnr_avg']:.2f} dB ({time.perf_counter() - t0:.0f} s)", flush=True)
    else:
        for job in jobs:
            res = run_job(job)
            results.append(res)
            print(f"  {res['row']} seed {res['seed']}: {res['scores']['psnr_avg']:.2f} dB ({time.perf_counter() - t0:.0f} s)", flush=True)

    from unirain_model.ablation import input_scores, per_type
    from unirain_model.evaluation import collect_test_sets

    inp = per_type(input_scores(collect_test_sets(data=[test_data])))
    val_input = val_input_l1(str(train_data), **_val_settings(args.recipe, overrides))
    table_rows, sigma = summarize(results, inp, val_input, types)
    table = format_table(table_rows, inp, types)
    noise = noise_lines(table_rows, sigma)
    coba = next((r for r in table_rows if r["config"] == COBA_ROW), None)
    uni = next((r for r in table_rows if r["config"] == UNIFORM_ROW), None)
    plot = plot_curves(results, val_input, types, out / "coba_vs_uniform.png")
    text = [table, "", *noise]
    if coba and uni:
        def per_seed(row):
            return ", ".join(f"{converge_together(r['final_val_l1'], val_input)[1]:.3f}" for r in results if r["row"] == row)

        text.append(f"converge together (std across types of the relative val-L1 drop 1 − L1_end/L1_input, lower = "
                    f"more even): CoBa {coba['val_drop_std']:.3f} (per seed {per_seed(COBA_ROW)}), uniform "
                    f"{uni['val_drop_std']:.3f} (per seed {per_seed(UNIFORM_ROW)})")
    text.append(f"total wall {time.perf_counter() - t0:.0f} s; curves: {plot}")
    print("\n" + "\n".join(text))
    import pandas as pd

    pd.DataFrame(table_rows).to_csv(out / "quality.csv", index=False)
    (out / "quality.md").write_text("\n".join(text) + "\n")
    report = {"args": vars(args), "input": inp, "val_input_l1": val_input, "rows": table_rows, "seed_sigma_psnr": sigma,
              "runs": results}
    (out / "quality.json").write_text(json.dumps(report, indent=1, default=str))
    return report


def _val_settings(recipe: str, overrides: dict) -> dict:
    from unirain_model.config import load_run_yaml, parse_train_config

    cfg = parse_train_config({**(load_run_yaml(recipe).get("train") or {}), **overrides})
    return {"val_fraction": cfg.val_fraction, "val_crop": cfg.val_crop, "max_per_type": cfg.val_max_per_type}


if __name__ == "__main__":
    main()
