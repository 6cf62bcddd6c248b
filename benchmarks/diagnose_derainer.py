"""Does the derainer learn? A small controlled training run, reported against doing nothing.

    # once: a training set and a held-out test set made from *different* clean photos
    .venv/bin/python benchmarks/diagnose_derainer.py make-data --out /tmp/diag
    # one run (1 thread; a few hundred iterations, 1-3 minutes)
    .venv/bin/python benchmarks/diagnose_derainer.py run --data /tmp/diag --model configs/model/unirain-s.yaml
    .venv/bin/python benchmarks/diagnose_derainer.py run --data /tmp/diag --model cnn      # the control

Each run trains exactly as `unirain_model.trainer` does (AdamW, linear warm-up + cosine from
`trainer.lr_factor`, the type-weighted L1 of `reweighting.weighted_type_loss` with uniform weights,
plus `aux_weight` × the Hard-MoE load-balancing loss, type-balanced crops from `data.TrainCrops`) and
prints one markdown row:

    label | it | s | train L1 | identity L1 | gain dB per type | mean gain dB

- train L1: mean per-sample L1 of the model over the last quarter of the iterations; identity L1: the
  rainy input's L1 on the very same batches. A network that has not learned anything sits at the
  identity's level (the global residual gives it the input for free).
- gain: PSNR(output, target) − PSNR(input, target) on the whole 256² test images, per rain type.

Ablations are one change at a time: `--set key=value` overrides a model-config key (e.g.
`--set decoder_ffn=dense`), `--lr/--warmup/--crop/--batch/--wd/--aux` the training settings,
`--loss l1|l2|berhu|charbonnier|psnr` the reconstruction loss and `--switch-at N --switch-to l1` a second loss after
iteration N (the trainer's `l2_iters: N` is `--loss l2 --switch-at N`), `--patch NAME` a change after
building (`default_output`: the output projection's init before the fix; `small_output`, `zero_routers`).
`--optim adam --schedule constant --aux 0` leaves the trainer's recipe for issue 11's control recipe
(torch.optim.Adam, no weight decay, constant lr), `--sampler shuffle` draws from one merged list,
`--eval-every N` prints the test gain on the way. `--json` appends the result to a file so a table can be rebuilt. `cnn` is the plain residual CNN of
issue 11 (8 convs, 48 channels, LeakyReLU), the peer the derainer must at least match. The runs and
what they showed: docs/training.md, "Why it did not learn, and the fix".
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRAIN_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "china")
TEST_PHOTOS = ("flower", "grace_hopper", "motorcycle_left", "motorcycle_right")  # both stereo views: no leak


def make_data(out: Path, per_type: int, test_per_type: int, seed: int) -> None:
    """Export the built-in photos into a train folder and a disjoint test folder, then synthesise."""
    from tasks.offline.synth import synthesize_paired
    from tasks.offline.synth.clean_photos import builtin_photo

    for split, names in (("clean_train", TRAIN_PHOTOS), ("clean_test", TEST_PHOTOS)):
        (out / split).mkdir(parents=True, exist_ok=True)
        for name in names:
            builtin_photo(name).save(out / split / f"{name}.png")
    synthesize_paired(out / "train", per_type=per_type, seed=seed, clean_dir=out / "clean_train")
    synthesize_paired(out / "test", per_type=test_per_type, seed=seed + 1, clean_dir=out / "clean_test")
    print(f"wrote {out}/train ({per_type}/type) and {out}/test ({test_per_type}/type)")


def plain_cnn(layers: int = 8, width: int = 48):
    """The control: convs with LeakyReLU and a global residual, default init."""
    from torch import nn

    class PlainCNN(nn.Module):
        def __init__(self):
            super().__init__()
            mods, c = [], 3
            for i in range(layers - 1):
                mods += [nn.Conv2d(c, width, 3, padding=1), nn.LeakyReLU(0.2)]
                c = width
            mods.append(nn.Conv2d(c, 3, 3, padding=1))
            self.body = nn.Sequential(*mods)

        def forward(self, x):
            return x + self.body(x)

        def aux_loss(self):
            import torch
            return torch.zeros(())

    return PlainCNN()


def _zero_output(model) -> None:
    """f(x) = 0 at the start: the network begins as the identity (the global residual)."""
    import torch

    with torch.no_grad():
        model.output.weight.zero_()


def _zero_routers(model) -> None:
    """Uniform routing at the start."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if "router" in name:
                p.zero_()


def _small_output(model) -> None:
    """The default init scaled by 0.1: |f(x)| well below the rain's own L1, but not exactly zero."""
    import torch

    model.output.reset_parameters()
    with torch.no_grad():
        model.output.weight.mul_(0.1)


def _default_output(model) -> None:
    """The output projection as it was before the fix: PyTorch's default (Kaiming-uniform) init."""
    model.output.reset_parameters()


# Diagnostic changes applied after building, for ablations of things that are not config keys.
PATCHES = {"zero_output": _zero_output, "zero_routers": _zero_routers, "default_output": _default_output,
           "small_output": _small_output}


def _berhu(err, c: float = 0.02):
    """Reverse Huber: |e| below c (small changes pulled back to exactly zero, like L1), (e²+c²)/2c
    above (large residuals dominate the gradient, like L2)."""
    a = err.abs()
    return a.where(a <= c, (a * a + c * c) / (2 * c))


def per_sample_fit(kind: str, err, eps: float = 1e-3):
    """Per-sample training loss: the trainer's own (`l1`, `l2`, `charbonnier` with ε = `eps`), or
    `berhu`, or `psnr`: 10·log10(MSE) per sample (minimising it maximises PSNR; its gradient is the
    MSE's divided by the sample's own MSE, so easy samples are not drowned out)."""
    import torch

    from unirain_model.trainer import per_sample_loss

    if kind == "psnr":
        return 10 * torch.log10(err.square().flatten(1).mean(1) + 1e-8)
    if kind == "berhu":
        return _berhu(err).flatten(1).mean(1)
    return per_sample_loss(err, kind, eps)


def _parse_value(text: str):
    import yaml

    return yaml.safe_load(text)


def build(model: str, sets: list[str]):
    from unirain_model.archs import build_model, load_model_config

    if model == "cnn":
        return plain_cnn(), {"type": "cnn"}
    cfg = load_model_config(model)
    for item in sets:
        key, _, value = item.partition("=")
        cfg[key] = _parse_value(value)
    return build_model(cfg), cfg


def load_test(folder: Path):
    from unirain_model.data import load_pair, read_pairs, to_tensor

    out: dict[str, list] = {}
    for row in read_pairs(folder).itertuples():
        a, b = load_pair(row.rainy_path, row.clean_path)
        out.setdefault(row.rain_type, []).append((to_tensor(a)[None], to_tensor(b)[None]))
    return out


def psnr(a, b) -> float:
    import torch

    mse = ((a.clamp(0, 1) - b) ** 2).mean().clamp_min(1e-10)
    return float(10 * torch.log10(1 / mse))


def evaluate(model, test) -> dict[str, float]:
    """Mean PSNR gain (model − input) per rain type on whole test images."""
    import torch

    model.eval()
    gains = {}
    with torch.no_grad():
        for rain_type, pairs in test.items():
            gains[rain_type] = sum(psnr(model(x), y) - psnr(x, y) for x, y in pairs) / len(pairs)
    model.train()
    return gains


def run(args) -> dict:
    import numpy as np
    import torch

    from unirain_model import data as data_mod
    from unirain_model.data import TypeTable, read_pairs, train_loader
    from unirain_model.reweighting import weighted_type_loss
    from unirain_model.trainer import lr_factor

    torch.set_num_threads(args.threads)
    # Decoded images are cached: the run measures learning, not PNG decoding.
    data_mod.load_pair = functools.lru_cache(maxsize=None)(data_mod.load_pair)
    table = TypeTable.from_frame(read_pairs(args.data / "train"))
    test = load_test(args.data / "test")
    torch.manual_seed(args.seed)
    model, cfg = build(args.model, args.set)
    for name in args.patch:
        PATCHES[name](model)
    params = sum(p.numel() for p in model.parameters())
    if args.optim == "adam":  # torch.optim.Adam: no weight decay at all (issue 11's control recipe)
        opt = torch.optim.Adam(model.parameters(), lr=args.lr, eps=args.eps)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.wd, eps=args.eps)
    if args.schedule == "constant":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, args.iters, args.warmup, args.min_lr / args.lr))
    weights = np.full(len(table.types), 1.0 / len(table.types))
    loader = train_loader(table, args.crop, args.batch, args.seed, 0, args.iters, sampler=args.sampler)
    tail = max(1, args.iters // 4)
    l1s, ids, curve, win, gain_curve = [], [], [], [0.0, 0.0], []
    t0 = time.perf_counter()
    for it, (x, y, type_idx) in enumerate(loader, 1):
        pred = model(x)
        per_sample = (pred - y).abs().flatten(1).mean(1)
        kind = args.loss if it <= args.switch_at else args.switch_to
        fit = per_sample if kind == "l1" else per_sample_fit(kind, pred - y, args.charbonnier_eps)
        loss = weighted_type_loss(fit, type_idx, weights) + args.aux * model.aux_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        sched.step()
        l1 = float(per_sample.detach().mean())
        ident = float((x - y).abs().mean())
        if it > args.iters - tail:
            l1s.append(l1)
            ids.append(ident)
        win[0] += l1
        win[1] += ident
        if it % max(1, args.iters // 10) == 0:  # L1 / identity L1 over each tenth of the run
            curve.append(round(win[0] / win[1], 3))
            win = [0.0, 0.0]
        if args.eval_every and it % args.eval_every == 0 and it < args.iters:  # mean gain on the way
            g = evaluate(model, test)
            gain_curve.append([it, round(float(np.mean(list(g.values()))), 3)])
            print(f"  it {it}: mean gain {gain_curve[-1][1]:+.3f} dB "
                  + " ".join(f"{t}:{v:+.2f}" for t, v in g.items()), flush=True)
    seconds = time.perf_counter() - t0
    gains = evaluate(model, test)
    result = {"label": args.label or f"{Path(args.model).stem} {' '.join(args.set)}".strip(),
              "model": args.model, "set": args.set, "patch": args.patch, "params": params, "iters": args.iters, "crop": args.crop,
              "batch": args.batch, "lr": args.lr, "warmup": args.warmup, "min_lr": args.min_lr, "wd": args.wd, "aux": args.aux, "loss": args.loss, "charbonnier_eps": args.charbonnier_eps,
              "optim": args.optim, "sampler": args.sampler, "schedule": args.schedule, "gain_curve": gain_curve,
              "switch": [args.switch_at, args.switch_to] if args.switch_at < args.iters else None,
              "seconds": round(seconds, 1), "train_l1": round(float(np.mean(l1s)), 5),
              "identity_l1": round(float(np.mean(ids)), 5), "l1_ratio_curve": curve,
              "gain_db": {t: round(g, 3) for t, g in gains.items()},
              "mean_gain_db": round(float(np.mean(list(gains.values()))), 3)}
    row = [result["label"], str(args.iters), f"{seconds:.0f}", f"{result['train_l1']:.4f}",
           f"{result['identity_l1']:.4f}", " ".join(f"{t}:{g:+.2f}" for t, g in result["gain_db"].items()),
           f"{result['mean_gain_db']:+.2f}"]
    print("| " + " | ".join(row) + " |")
    print("  L1/identity every tenth:", curve, flush=True)
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make-data", help="write OUT/train and OUT/test (disjoint clean photos)")
    mk.add_argument("--out", type=Path, required=True)
    mk.add_argument("--per-type", type=int, default=16)
    mk.add_argument("--test-per-type", type=int, default=4)
    mk.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("run", help="train one configuration and print its row")
    r.add_argument("--data", type=Path, required=True, help="folder from make-data")
    r.add_argument("--model", default=str(ROOT / "configs/model/unirain-s.yaml"), help="model YAML or 'cnn'")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a model key")
    r.add_argument("--patch", action="append", default=[], choices=sorted(PATCHES),
                   help="a diagnostic change after building (repeatable)")
    r.add_argument("--iters", type=int, default=300)
    r.add_argument("--batch", type=int, default=4)
    r.add_argument("--crop", type=int, default=64)
    r.add_argument("--lr", type=float, default=5e-4)
    r.add_argument("--warmup", type=int, default=10)
    r.add_argument("--min-lr", type=float, default=0.0, help="the cosine's floor (the trainer's train.min_lr)")
    r.add_argument("--wd", type=float, default=1e-2)
    r.add_argument("--eps", type=float, default=1e-8)
    r.add_argument("--aux", type=float, default=0.01)
    losses = ("l1", "l2", "berhu", "charbonnier", "psnr")
    r.add_argument("--loss", choices=losses, default="l1", help="l1: the trainer's loss")
    r.add_argument("--charbonnier-eps", type=float, default=1e-3,
                   help="ε of the Charbonnier loss: ≈ L1 at 1e-3; at 1e-2 errors below ~2.5 grey levels pull like L2")
    r.add_argument("--switch-at", type=int, default=10**9, help="use --switch-to after this iteration")
    r.add_argument("--switch-to", choices=losses, default="l1")
    r.add_argument("--optim", choices=("adamw", "adam"), default="adamw",
                   help="adamw: the trainer's (with --wd); adam: torch.optim.Adam, no weight decay")
    r.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                   help="cosine: the trainer's warm-up + cosine to 0; constant: --lr throughout")
    r.add_argument("--sampler", choices=("balanced", "shuffle"), default="balanced",
                   help="balanced: type-balanced batches (the trainer's default); shuffle: one merged list")
    r.add_argument("--eval-every", type=int, default=0, help="also print the test gain every N iterations")
    r.add_argument("--clip", type=float, default=None)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--label", default="")
    r.add_argument("--json", default=None, help="append the result as a JSON line here")
    args = parser.parse_args(argv)
    if args.cmd == "make-data":
        make_data(args.out, args.per_type, args.test_per_type, args.seed)
    else:
        run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
