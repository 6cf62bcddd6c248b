"""One-GPU readiness check of the full derainer: training rate, memory, tiled inference, Hard-MoE cost.

    python benchmarks/gpu_check.py --out gpu_check.json          # one CUDA GPU, < 8 min on an H200
    python benchmarks/gpu_check.py --device cpu --small          # the smoke test (seconds; tests/test_gpu_check.py)

Needs only PyTorch and this package's pure-Python dependencies (`unirain_model`, `data_manifests`:
numpy, pandas, pyarrow, pydantic, PyYAML, Pillow, safetensors) — no Prefect, open_clip, FAISS or
transformers on its import path, so it runs on a bare GPU node with the repository checked out.

Measures, on random data (the rates are the network's; data loading is not in them):
1. train: `configs/model/unirain.yaml`, batch 8, 128² crops, bf16 autocast, the trainer's step
   (type-weighted L1 + 0.01 × the Hard-MoE load-balancing loss, backward, AdamW): iterations/s after
   `--warmup` iterations, and peak GPU memory;
2. infer: tiled inference (`unirain_model.inference.derain_array`, 256² tiles, overlap 32, bf16) of a
   4096×2160 image: seconds, and peak memory;
3. moe: Hard-MoE with 8 vs 2 experts (top-2, same expert size): forward+backward time of one FFN layer
   at full resolution and of the whole hard/hard model; a ratio near 1 means unchosen experts cost
   nothing (Soft-MoE would scale with the expert count).
Prints a table and writes JSON (`--out`). `docs/scaling.md` turns these rates into wall time for 300k
iterations on 4 GPUs. `--small` swaps in a tiny model, batch 2, 32² crops, a 512×270 image, 3
iterations: the same code paths in seconds on a CPU.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SMALL_MODEL = {"type": "unirain", "dim": 8, "num_blocks": [1, 1, 1, 1], "heads": [1, 1, 2, 2],
               "num_refinement_blocks": 1, "expert_expansion": 1.0, "num_experts": 4, "top_k": 2,
               "encoder_ffn": "soft", "decoder_ffn": "hard"}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def train_rate(model_cfg: dict, device: torch.device, batch: int, crop: int, iters: int, warmup: int,
               amp: bool, max_seconds: float = float("inf")) -> dict:
    """The trainer's step on random tensors: it/s over `iters` timed iterations after `warmup` (fewer
    when `max_seconds` runs out first: the rate is over the iterations done)."""
    from unirain_model.archs import build_model
    from unirain_model.complexity import count_params
    from unirain_model.reweighting import weighted_type_loss

    torch.manual_seed(0)
    model = build_model(model_cfg).to(device).train()
    model.set_record_routing(False)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=1e-2)
    x = torch.rand(batch, 3, crop, crop, device=device)
    y = (x * 0.8 + 0.1).clamp(0, 1)
    types = torch.arange(batch, device=device) % 4
    weights = torch.full((4,), 0.25, device=device)

    def step():
        with autocast(device, amp):
            pred = model(x)
            aux = model.aux_loss()
        loss = weighted_type_loss((pred.float() - y).abs().flatten(1).mean(1), types, weights) + 0.01 * aux.float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    for _ in range(warmup):
        step()
    sync(device)
    reset_peak(device)
    t0 = time.perf_counter()
    done = 0
    while done < iters:
        loss = step()
        done += 1
        if done % 10 == 0 and time.perf_counter() - t0 > max_seconds:
            break
    sync(device)
    dt = time.perf_counter() - t0
    return {"params": count_params(model), "batch": batch, "crop": crop, "iters": done, "seconds": dt,
            "it_per_s": done / dt, "peak_gib": peak_gib(device), "final_loss": float(loss.detach())}


def tiled_inference(model_cfg: dict, device: torch.device, width: int, height: int, tile: int, overlap: int,
                    batch: int, amp: bool) -> dict:
    """Seconds to derain one width×height image in tiles (a warm-up pass on a small image first)."""
    from unirain_model.archs import build_model
    from unirain_model.inference import derain_array, tiles_count

    torch.manual_seed(0)
    model = build_model(model_cfg).to(device).eval()
    model.set_record_routing(False)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    derain_array(model, img[: tile + tile // 2, : tile + tile // 2], tile=tile, overlap=overlap, batch=batch, amp=amp)
    sync(device)
    reset_peak(device)
    t0 = time.perf_counter()
    out = derain_array(model, img, tile=tile, overlap=overlap, batch=batch, amp=amp)
    sync(device)
    dt = time.perf_counter() - t0
    assert out.shape == img.shape, out.shape
    n = tiles_count(height, width, tile, overlap)
    return {"size": f"{width}x{height}", "tile": tile, "overlap": overlap, "tiles": n, "seconds": dt,
            "tiles_per_s": n / dt, "peak_gib": peak_gib(device)}


def _timed(fn, device: torch.device, reps: int) -> float:
    """Median seconds of `reps` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def moe_ratio(model_cfg: dict, device: torch.device, batch: int, crop: int, reps: int, amp: bool) -> dict:
    """Forward+backward time, 8 experts vs 2 (top-2, same expert size), interleaved reps."""
    from unirain_model.archs import build_model
    from unirain_model.moe import HardMoEFFN

    dim = model_cfg["dim"]
    hidden = max(1, round(dim * model_cfg.get("expert_expansion", 1.0)))
    x_layer = torch.rand(batch, dim, crop, crop, device=device)
    x_model = torch.rand(batch, 3, crop, crop, device=device)
    subjects = {}
    for e in (2, 8):
        torch.manual_seed(0)
        subjects[f"layer {e}e"] = (HardMoEFFN(dim, hidden, e, 2).to(device), x_layer)
        torch.manual_seed(0)
        m = build_model({**model_cfg, "encoder_ffn": "hard", "decoder_ffn": "hard", "num_experts": e, "top_k": 2})
        m.set_record_routing(False)
        subjects[f"model {e}e"] = (m.to(device), x_model)

    def fwd_bwd(m, x):
        def run():
            m.zero_grad(set_to_none=True)
            with autocast(device, amp):
                out = m(x)
            out.float().square().mean().backward()
        return run

    fns = {k: fwd_bwd(m, x) for k, (m, x) in subjects.items()}
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):  # round-robin so drifting load hits every subject alike
        for k, fn in fns.items():
            samples[k].append(_timed(fn, device, 1))
    t = {k: statistics.median(v) for k, v in samples.items()}
    return {"layer_2e_s": t["layer 2e"], "layer_8e_s": t["layer 8e"], "layer_ratio_8_vs_2": t["layer 8e"] / t["layer 2e"],
            "model_2e_s": t["model 2e"], "model_8e_s": t["model 8e"], "model_ratio_8_vs_2": t["model 8e"] / t["model 2e"],
            "layer_input": list(x_layer.shape), "model_input": list(x_model.shape)}


def machine(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
            "threads": torch.get_num_threads()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_mem_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda)
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    p.add_argument("--small", action="store_true", help="tiny model and sizes: a smoke run (CPU, seconds)")
    p.add_argument("--model", default=str(ROOT / "configs" / "model" / "unirain.yaml"), help="model config YAML")
    p.add_argument("--iters", type=int, default=300, help="timed training iterations")
    p.add_argument("--warmup", type=int, default=30, help="untimed training iterations first")
    p.add_argument("--max-train-seconds", type=float, default=240, help="stop the timed loop early after this")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--image", default="4096x2160", help="tiled-inference image WxH")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--tile-overlap", type=int, default=32)
    p.add_argument("--tile-batch", type=int, default=16, help="tiles per forward pass")
    p.add_argument("--moe-reps", type=int, default=10)
    p.add_argument("--no-amp", action="store_true", help="float32 instead of bf16 autocast")
    p.add_argument("--out", default="gpu_check.json", help="JSON report path")
    args = p.parse_args(argv)
    if args.small:
        args.iters, args.warmup, args.batch, args.crop = 3, 1, 2, 32
        args.image, args.tile, args.tile_overlap, args.tile_batch, args.moe_reps = "512x270", 64, 8, 4, 2
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: CUDA is not available (use --device cpu --small for the smoke run)")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    from unirain_model.archs import load_model_config

    model_cfg = SMALL_MODEL if args.small else load_model_config(args.model)
    amp = not args.no_amp and (device.type == "cuda")  # bf16 autocast on CPU is slow and not what CPUs run
    width, height = (int(v) for v in args.image.lower().split("x"))
    t_start = time.perf_counter()
    report = {"machine": machine(device), "model": model_cfg, "amp_bf16": amp, "small": args.small}
    report["train"] = train_rate(model_cfg, device, args.batch, args.crop, args.iters, args.warmup, amp,
                                 args.max_train_seconds)
    report["infer"] = tiled_inference(model_cfg, device, width, height, args.tile, args.tile_overlap, args.tile_batch, amp)
    report["moe"] = moe_ratio(model_cfg, device, args.batch, args.crop, args.moe_reps, amp)
    report["total_seconds"] = time.perf_counter() - t_start

    tr, inf, moe = report["train"], report["infer"], report["moe"]
    mem = lambda v: "n/a (CPU)" if v is None else f"{v:.2f} GiB"  # noqa: E731
    rows = [
        ("device", f"{report['machine'].get('gpu', report['machine'].get('cpu'))} ({device}), bf16 autocast: {amp}"),
        ("model", f"{Path(args.model).name if not args.small else 'tiny (--small)'}: {tr['params'] / 1e6:.2f} M params"),
        (f"train it/s (batch {tr['batch']}, {tr['crop']}², {tr['iters']} it)", f"{tr['it_per_s']:.2f}"),
        ("train peak GPU memory", mem(tr["peak_gib"])),
        (f"tiled inference {inf['size']} ({inf['tiles']} tiles of {inf['tile']}²)", f"{inf['seconds']:.2f} s ({inf['tiles_per_s']:.1f} tiles/s)"),
        ("inference peak GPU memory", mem(inf["peak_gib"])),
        ("Hard-MoE 8 vs 2 experts, one layer (fwd+bwd)", f"{moe['layer_ratio_8_vs_2']:.2f}x"),
        ("Hard-MoE 8 vs 2 experts, hard/hard model (fwd+bwd)", f"{moe['model_ratio_8_vs_2']:.2f}x"),
        ("300k iterations at this rate, one device", f"{300_000 / tr['it_per_s'] / 3600:.1f} h"),
        ("total check time", f"{report['total_seconds']:.0f} s"),
    ]
    print("| measure | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"report: {out}")
    return report


if __name__ == "__main__":
    main()
