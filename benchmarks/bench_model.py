"""Derainer benchmarks, one function per measurement, each printing its own table.

    .venv/bin/python benchmarks/bench_model.py [--only macs,hard_moe] [--device cpu|cuda] [--threads 2]

Sections (`--only` takes a comma list of names in SECTIONS):
- `macs`: parameters and MACs at 256×256 of every model config (counted on the meta device).
- `hard_moe`: Hard-MoE really skips work: forward time with 8 experts top-2 vs 2 experts top-2, same
  expert size, for one FFN layer and for a whole hard/hard model, plus Soft-MoE with 8 experts (which
  runs them all) as the contrast. Configurations are timed interleaved, best and median of `--reps`, so
  load on a shared machine hits all of them alike; wall and CPU time are both shown. On an oversubscribed
  machine use `--threads 1`: with 2 threads every parallel op waits for its preempted twin.
- `train`: training iterations/s of unirain-s (batch 8, 128², the trainer's step); with `--device cuda`
  AMP (bfloat16) and peak GPU memory.
- `tiled`: peak RSS of tiled inference on a 2048² vs a 512² image (one process per size), and PSNR of tiled
  vs whole-image output on a 512² photo.

To add a section: write `bench_<name>(args) -> None` that prints a table and add it to SECTIONS.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODEL_CONFIGS = ["unirain", "unirain-s", "unirain-soft-soft", "unirain-hard-hard", "unirain-dense"]


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row) + " |")


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_samples(fns: dict[str, Callable[[], None]], reps: int, device) -> dict[str, list[tuple[float, float]]]:
    """(wall s, process-CPU s) per rep and function; one warm-up call each, then round-robin reps,
    so load on a shared machine hits every function alike."""
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(reps):
        for name, fn in fns.items():
            sync(device)
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            sync(device)
            samples[name].append((time.perf_counter() - w0, time.process_time() - c0))
    return samples


def time_interleaved(fns: dict[str, Callable[[], None]], reps: int, device) -> dict[str, tuple[float, float]]:
    """Median (wall s, process-CPU s) per function."""
    return {k: (statistics.median(s[0] for s in v), statistics.median(s[1] for s in v))
            for k, v in interleaved_samples(fns, reps, device).items()}


def time_best(fns: dict[str, Callable[[], None]], reps: int, device) -> dict[str, dict[str, float]]:
    """Per function the best and median wall seconds and the best CPU seconds. On a shared, loaded
    machine the best of the reps is the steadiest number (interference only ever adds time)."""
    return {k: {"wall": min(s[0] for s in v), "wall_median": statistics.median(s[0] for s in v),
                "cpu": min(s[1] for s in v)} for k, v in interleaved_samples(fns, reps, device).items()}


TIMING_HEADER = ["G MACs", "best wall ms", "median wall ms", "best cpu ms", "wall ÷ first", "cpu ÷ first"]


def timing_rows(modules: dict, times: dict, shape: tuple) -> list[list]:
    """Rows for TIMING_HEADER; ratios are against the first entry."""
    from unirain_model.complexity import count_macs

    base = next(iter(times.values()))
    return [[k, f"{count_macs(m, shape) / 1e9:.2f}", f"{1e3 * t['wall']:.1f}", f"{1e3 * t['wall_median']:.1f}",
             f"{1e3 * t['cpu']:.1f}", f"{t['wall'] / base['wall']:.2f}", f"{t['cpu'] / base['cpu']:.2f}"]
            for k, m in modules.items() for t in [times[k]]]


def bench_macs(args) -> None:
    import torch

    from unirain_model.archs import build_model, load_model_config
    from unirain_model.complexity import count_macs, count_params

    rows = []
    for name in MODEL_CONFIGS:
        cfg = load_model_config(ROOT / "configs/model" / f"{name}.yaml")
        with torch.device("meta"):
            model = build_model(cfg)
        macs = count_macs(model, (1, 3, 256, 256))
        rows.append([name, f"{cfg['encoder_ffn']}/{cfg['decoder_ffn']}", f"{count_params(model) / 1e6:.2f}",
                     f"{macs / 1e9:.1f}", f"{macs / 126.5e9:.3f}"])
    print_table("Parameters and MACs at 256×256 (paper budget 126.5 G)",
                ["config", "encoder/decoder FFN", "params (M)", "G MACs", "÷ 126.5 G"], rows)


def bench_hard_moe(args) -> None:
    import torch

    from unirain_model.archs import build_model, load_model_config
    from unirain_model.moe import HardMoEFFN, SoftMoEFFN

    device = torch.device(args.device)
    torch.manual_seed(0)
    dim, hidden = 48, 48
    x = torch.rand(args.batch, dim, args.size, args.size, device=device)
    layers = {"hard 2e top-2": HardMoEFFN(dim, hidden, 2, 2), "hard 8e top-2": HardMoEFFN(dim, hidden, 8, 2),
              "soft 8e (all run)": SoftMoEFFN(dim, hidden, 8)}
    for m in layers.values():
        m.to(device).eval().record_routing = False

    def fwd(m, inp):
        def run():
            with torch.no_grad():
                m(inp)
        return run

    times = time_best({k: fwd(m, x) for k, m in layers.items()}, args.reps, device)
    print_table(f"One FFN layer, C={dim}, expert hidden={hidden}, input {args.batch}×{dim}×{args.size}² "
                f"({args.device}, {torch.get_num_threads()} threads, {args.reps} reps)",
                ["layer", *TIMING_HEADER], timing_rows(layers, times, tuple(x.shape)))

    cfg = load_model_config(ROOT / "configs/model/unirain-s.yaml")
    models = {}
    for e in (2, 8):
        torch.manual_seed(0)
        models[f"unirain-s hard/hard {e}e top-2"] = build_model(
            {**cfg, "encoder_ffn": "hard", "decoder_ffn": "hard", "num_experts": e, "top_k": 2}).to(device).eval()
    for m in models.values():
        m.set_record_routing(False)
    img = torch.rand(args.batch, 3, args.model_size, args.model_size, device=device)
    times = time_best({k: fwd(m, img) for k, m in models.items()}, args.reps, device)
    print_table(f"Whole model, input {tuple(img.shape)} ({args.device}, {args.reps} reps)",
                ["model", *TIMING_HEADER], timing_rows(models, times, tuple(img.shape)))


def bench_train(args) -> None:
    """Training iterations/s of unirain-s: batch 8, 128² crops, the trainer's step (forward, type-weighted
    L1 + 0.01·aux loss, backward, AdamW); AMP (bfloat16) and peak GPU memory on CUDA."""
    import torch

    from unirain_model.archs import build_model, load_model_config
    from unirain_model.reweighting import weighted_type_loss

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(load_model_config(ROOT / "configs/model/unirain-s.yaml")).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=1e-2)
    x = torch.rand(args.train_batch, 3, 128, 128, device=device)
    y = (x * 0.9).clamp(0, 1)
    types = torch.arange(args.train_batch, device=device) % 4
    use_amp = device.type == "cuda"
    if use_amp:
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            pred = model(x)
            aux = model.aux_loss()
        loss = weighted_type_loss((pred.float() - y).abs().flatten(1).mean(1), types, [0.25] * 4) + 0.01 * aux.float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = time_interleaved({"step": step}, args.train_iters, device)
    wall, cpu = times["step"]
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    row = ["unirain-s", args.train_batch, "128²", card, "bf16" if use_amp else "fp32", f"{1 / wall:.3f}",
           f"{wall:.2f}", f"{cpu:.2f}"]
    header = ["model", "batch", "crop", "device", "precision", "it/s (wall)", "s/it wall", "s/it cpu"]
    if device.type == "cuda":
        row.append(f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f}")
        header.append("peak GPU GiB")
    print_table(f"Training step, median of {args.train_iters} after one warm-up", header, [row])


def _vm_hwm_mib() -> float:
    """This process's peak RSS (VmHWM). Unlike ru_maxrss it starts afresh at exec: ru_maxrss of a
    child inherits the high-water mark of the parent it was forked from."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _tiled_child(size: int, tile: int, overlap: int, batch: int, threads: int) -> dict:
    """In a fresh process: peak RSS of deraining one random size×size image with unirain-s in tiles."""
    import numpy as np
    import torch

    from unirain_model.archs import build_model, load_model_config
    from unirain_model.inference import derain_array, to_uint8

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(load_model_config(ROOT / "configs/model/unirain-s.yaml")).eval()
    model.set_record_routing(False)
    img = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    before = _vm_hwm_mib()
    w0 = time.perf_counter()
    out = to_uint8(derain_array(model, img, tile=tile, overlap=overlap, batch=batch))
    seconds = time.perf_counter() - w0
    assert out.shape == img.shape
    return {"size": size, "before": before, "peak": _vm_hwm_mib(), "seconds": seconds}


def bench_tiled(args) -> None:
    """Peak memory of tiled inference (tile 256, overlap 32, 4 tiles per forward) on 2048² vs 512², one
    fresh process per size (VmHWM, the process's peak RSS); and how close tiled output is
    to whole-image output on a 512² photo."""
    import json
    import subprocess

    import numpy as np
    import torch
    from skimage import data as skdata

    from unirain_model.archs import build_model, load_model_config
    from unirain_model.inference import derain_array, to_uint8
    from unirain_model.metrics import psnr

    rows, peaks = [], {}
    for size in (512, 2048):
        code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); from benchmarks.bench_model import _tiled_child; "
                f"print('RESULT', json.dumps(_tiled_child({size}, 256, 32, 4, {args.threads})))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        r = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
        peaks[size] = r["peak"]
        rows.append([f"{size}²", f"{r['before']:.0f}", f"{r['peak']:.0f}", f"{r['peak'] - r['before']:.0f}",
                     f"{r['peak'] / peaks[512]:.2f}", f"{r['seconds']:.1f}"])
    print_table("Tiled inference memory, unirain-s, tile 256 / overlap 32 / 4 tiles per forward (CPU)",
                ["image", "RSS before MiB", "peak RSS MiB", "growth MiB", "peak ÷ 512²", "seconds"], rows)

    torch.manual_seed(0)
    model = build_model(load_model_config(ROOT / "configs/model/unirain-s.yaml")).eval()
    model.set_record_routing(False)
    img = skdata.astronaut()
    whole = derain_array(model, img, tile=None)
    tiled = derain_array(model, img, tile=256, overlap=32)
    print_table("Tiled vs whole-image output, 512² astronaut, unirain-s random weights",
                ["tile/overlap", "PSNR uint8 (dB)", "PSNR float (dB)", "whole output vs input (dB)"],
                [["256/32", f"{psnr(to_uint8(tiled), to_uint8(whole)):.2f}",
                  f"{10 * np.log10(1 / np.mean((whole - tiled) ** 2)):.2f}", f"{psnr(to_uint8(whole), img):.2f}"]])


SECTIONS: dict[str, Callable] = {"macs": bench_macs, "hard_moe": bench_hard_moe, "train": bench_train,
                               "tiled": bench_tiled}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help=f"comma list of sections (default all): {', '.join(SECTIONS)}")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions per configuration")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, default=128, help="FFN-layer input side (hard_moe)")
    ap.add_argument("--model-size", type=int, default=256, help="whole-model input side (hard_moe)")
    ap.add_argument("--train-batch", type=int, default=8, help="training batch (train)")
    ap.add_argument("--train-iters", type=int, default=5, help="timed training steps (train)")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {unknown}; known: {', '.join(SECTIONS)}")

    import os

    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, {args.threads} threads, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    for name in names:
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
