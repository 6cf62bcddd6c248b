"""Training loop of the derainer: AdamW, warm-up + cosine (to a floor) or constant lr, type-weighted L1 or
Charbonnier (after an optional L2 start) + MoE aux loss, per-type validation feeding the reweighter
(CoBa), AMP on CUDA, DDP under torchrun, resumable checkpoints.

    result = train(cfg, run_dir="runs/r1", data="runs/r1/manifests/distilled")

Resume: when `RUN/checkpoints/latest.json` exists, training continues from its iteration with the
saved optimizer, scheduler, scaler, RNG and reweighter state; batches are a pure function of the
global sample index (see `data.py`), so the resumed run ends where an uninterrupted one would.
`cfg.iters` is the total. DDP: started by `torchrun` (WORLD_SIZE > 1), each rank takes its own slice
of every iteration's samples, validation sums are all-reduced so every rank gets the same weights,
and rank 0 alone writes checkpoints, TensorBoard and reports.

Messages (the resume line, validations, checkpoint saves, the summary) go to the `unirain.train` logger,
which the flows route to Prefect's run log, and to the console when no console handler takes them. The
progress bar is drawn only on a terminal; elsewhere (a log file, a worker) a plain line every 10 % of the
run or 30 s takes its place.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist

from unirain_model import checkpoint as ckpt
from unirain_model.config import TrainConfig, model_config
from unirain_model.data import (DataError, TypeTable, iters_per_epoch, read_pairs, split_train_val, train_loader,
                                 val_loaders)
from unirain_model.reweighting import build_reweighter, weighted_type_loss

log = logging.getLogger("unirain.train")
PLAIN_PROGRESS_FRACTION, PLAIN_PROGRESS_SECONDS = 0.1, 30.0  # a progress line without a terminal

# progress(iteration, total, info): info has "loss", "lr" and, after an evaluation, "val_l1" and "weights".
ProgressFn = Callable[[int, int, dict[str, Any]], None]


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path | None
    iteration: int
    types: list[str]
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int = 0


# ----------------------------------------------------------------------------- small helpers
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device: {name!r} requested but CUDA is not available")
    return dev


def lr_factor(step: int, total: int, warmup: int, min_ratio: float, schedule: str = "cosine") -> float:
    """Linear warm-up over `warmup` steps, then cosine from 1 to `min_ratio` at `total` (or 1 throughout
    for `schedule="constant"`)."""
    warmup = min(warmup, total)
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


LOSSES = ("l2", "l1", "charbonnier")


def per_sample_loss(err: torch.Tensor, kind: str, eps: float = 1e-3) -> torch.Tensor:
    """Mean per-sample loss of a batch: `l2` (the `l2_iters` warm start), `l1` or `charbonnier`
    (sqrt(e² + eps²): L1 away from zero, smooth within eps of it; MPRNet/Restormer's loss).

    Why L2 first: under L1 the many pixels the rain left unchanged hold a short run at the identity;
    L2 lets the large rain residuals lead, then L1/Charbonnier removes L2's type-blind global shift
    (docs/training.md, "Why it did not learn, and the fix")."""
    if kind == "l2":
        e = err.square()
    elif kind == "l1":
        e = err.abs()
    elif kind == "charbonnier":
        e = (err.square() + eps * eps).sqrt()
    else:
        raise ValueError(f"unknown loss {kind!r} (expected one of {', '.join(LOSSES)})")
    return e.flatten(1).mean(1)


def loss_at(it: int, cfg: TrainConfig) -> str:
    """The loss iteration `it` (0-based) trains with: L2 for the first `l2_iters`, then `train.loss`."""
    return "l2" if it < cfg.l2_iters else cfg.loss


def _console_takes(logger: logging.Logger) -> bool:
    """Whether an INFO record of `logger` reaches a console (stream, not file) handler on its way up:
    Prefect's console handler in a flow, `basicConfig`'s, pytest's capture. Then the logger alone prints it."""
    if not logger.isEnabledFor(logging.INFO):
        return False
    node: logging.Logger | None = logger
    while node is not None:
        for h in node.handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) and h.level <= logging.INFO:
                return True
        node = node.parent if node.propagate else None
    return False


def say(msg: str, bar=None) -> None:
    """One message of the run: to the `unirain.train` logger (Prefect's run log inside a flow), and to the
    console (above the progress bar when there is one) unless a console handler already prints it."""
    log.info(msg)
    if not _console_takes(log):
        if bar is not None:
            bar.write(msg)
        else:
            print(msg, file=sys.stderr, flush=True)


class _Dist:
    """torchrun's environment: rank, world size, local device."""

    def __init__(self, device_name: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = resolve_device(device_name)
        self.enabled = self.world > 1
        if self.enabled:
            if self.device.type == "cuda":
                self.device = torch.device("cuda", self.local_rank)
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(t)
        return t

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def reweighting_period(every: str | int | None, eval_every: int, epoch_iters: int) -> int:
    """Iterations between reweighter updates: `train.reweighting.every` = 'epoch' (one pass over the
    training pairs, the authors' released clock), N, or None = every evaluation (`eval_every`)."""
    if every is None:
        return eval_every
    return epoch_iters if every == "epoch" else int(every)


# ----------------------------------------------------------------------------- validation
@torch.no_grad()
def validate(model: torch.nn.Module, loaders: dict[str, Any], device: torch.device, autocast, ddp: _Dist) -> dict[str, dict[str, float]]:
    """Mean per-sample L1 and PSNR per type (sums all-reduced across ranks)."""
    was_training = model.training
    model.eval()
    out = {}
    for rain_type, loader in loaders.items():
        acc = torch.zeros(3, dtype=torch.float64, device=device)  # l1 sum, psnr sum, count
        for batch in loader:
            if batch is None:
                continue
            x, y = (t.to(device, non_blocking=True) for t in batch)
            with autocast():
                pred = model(x)
            pred = pred.float().clamp(0, 1)
            l1 = (pred - y).abs().flatten(1).mean(1)
            mse = ((pred - y) ** 2).flatten(1).mean(1).clamp_min(1e-10)
            acc += torch.stack([l1.sum().double(), (10 * torch.log10(1.0 / mse)).sum().double(),
                                torch.tensor(float(len(l1)), dtype=torch.float64, device=device)])
        acc = ddp.all_sum(acc)
        n = acc[2].item()
        out[rain_type] = {"l1": acc[0].item() / n if n else float("nan"), "psnr": acc[1].item() / n if n else float("nan")}
    model.train(was_training)
    return out


# ----------------------------------------------------------------------------- reports
def _write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _read_history(path: Path, upto: int) -> list[dict[str, Any]]:
    """Rows of an earlier run up to the resumed iteration (later rows belong to lost work)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()} for r in csv.DictReader(f)]
    for r in rows:
        for key in ("iteration", "reweighted"):
            if r.get(key) is not None:
                r[key] = int(r[key])
    return [r for r in rows if r["iteration"] <= upto]


def plot_history(rows: list[dict[str, Any]], types: list[str], path: Path) -> Path | None:
    """Four panels over iterations: training loss, per-type validation L1 and PSNR (the rainy inputs' own
    PSNR dashed in the type's colour: the line to rise above) and training weights. One legend below the
    panels, so no line is hidden behind it."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    def series(key):
        return [r.get(key) if r.get(key) is not None else float("nan") for r in rows]

    its = [r["iteration"] for r in rows]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), layout="constrained")
    (ax_loss, ax_l1), (ax_psnr, ax_w) = axes
    ax_loss.plot(its, series("train_loss"), marker=".", color="black")
    ax_loss.set(title="training loss (mean since the previous validation)", xlabel="iteration", ylabel="loss")
    for i, t in enumerate(types):
        c = colours[i % len(colours)]
        ax_l1.plot(its, series(f"val_l1_{t}"), marker=".", color=c)
        ax_psnr.plot(its, series(f"val_psnr_{t}"), marker=".", color=c)
        if any(r.get(f"input_psnr_{t}") is not None for r in rows):
            ax_psnr.plot(its, series(f"input_psnr_{t}"), ls="--", lw=1, color=c)
        ax_w.plot(its, series(f"weight_{t}"), marker=".", color=c)
    ax_l1.set(title="validation L1 per rain type", xlabel="iteration", ylabel="L1")
    ax_psnr.set(title="validation PSNR per rain type (dashed: the rainy input)", xlabel="iteration", ylabel="PSNR dB")
    ax_w.set(title="training weight per rain type", xlabel="iteration", ylabel="weight")
    handles = [Line2D([], [], color=colours[i % len(colours)], marker=".", label=t) for i, t in enumerate(types)]
    handles.append(Line2D([], [], color="grey", ls="--", lw=1, label="input (no deraining)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- training
def train(cfg: TrainConfig, run_dir: str | Path, data: str | Path, progress: ProgressFn | None = None,
          show_progress_bar: bool = True, types: Sequence[str] | None = None) -> TrainResult:
    """`types`: the run's degradation types (`data.run_types(config)`); None = every declared type in the data.
    `show_progress_bar`: a bar on a terminal, a plain line every 10 % (or 30 s) elsewhere; False = neither
    (for callers that report progress themselves)."""
    run_dir = Path(run_dir)
    ddp = _Dist(cfg.device)
    device = ddp.device
    ckpt_dir, reports = run_dir / "checkpoints", run_dir / "reports"

    pairs = read_pairs(data, types=types)
    train_pairs, val_pairs = split_train_val(pairs, cfg.val_fraction)
    if train_pairs.empty:
        raise DataError(f"{data}: no training pairs after the validation split")
    train_table, val_table = TypeTable.from_frame(train_pairs, types), TypeTable.from_frame(val_pairs, types)
    types = list(train_table.types)
    if list(val_table.types) != types:
        raise DataError(f"{data}: validation split lacks types {sorted(set(types) - set(val_table.types))}")
    kind = cfg.reweighting.kind
    if len(types) == 1:
        warnings.warn(f"{data}: only one rain type ({types[0]}): training with uniform weights", stacklevel=2)
        kind = "uniform"
    rw = cfg.reweighting
    reweighter = build_reweighter(kind, len(types), history=rw.history, tau=rw.tau,
                                  warmup_evals=rw.warmup_evals, min_weight=rw.min_weight)
    weights = np.full(len(types), 1.0 / len(types))
    epoch_iters = iters_per_epoch(len(train_pairs), cfg.batch_size, ddp.world)
    rw_period = reweighting_period(rw.every, cfg.eval_every, epoch_iters)

    torch.manual_seed(cfg.seed)
    from unirain_model.archs import build_model

    mcfg = model_config(cfg)
    model = build_model(mcfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    min_ratio = cfg.min_lr / cfg.lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.iters, cfg.warmup_iters, min_ratio, cfg.schedule))
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if cfg.amp_dtype == "bfloat16" else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    def autocast():
        return torch.autocast("cuda", dtype=amp_dtype) if use_amp else nullcontext()

    # ---- resume
    start = 0
    history: list[dict[str, Any]] = []
    loss_since_eval = (0.0, 0)  # (sum, count) of the training loss since the last validation: the history's train_loss
    latest = ckpt.load_resume(ckpt_dir)  # the newest intact checkpoint (a damaged one: warned about, skipped)
    if latest:
        state, meta = latest.state, latest.meta
        if list(state["types"]) != types:
            raise DataError(f"{ckpt_dir}: checkpoint was trained on types {state['types']}, the data now has {types}; "
                            "use a new run folder")
        if meta["model_config"] != json.loads(json.dumps(mcfg)):
            raise ckpt.CheckpointError(f"{ckpt_dir}: checkpoint model config differs from train.model; "
                                       "use a new run folder")
        model.load_state_dict(latest.weights)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        reweighter.load_state_dict(state["reweighter"])
        weights = np.asarray(state["weights"], dtype=np.float64)
        _set_rng_state(state["rng"], device)
        start = int(state["iteration"])
        loss_since_eval = tuple(state.get("loss_since_eval", loss_since_eval))
        if ddp.main:  # the run's first line says it continues, and from where
            say(f"resuming from iteration {start} of {cfg.iters}, checkpoint {latest.weights_path}")
        if state.get("train_pairs", len(train_pairs)) != len(train_pairs):
            warnings.warn(f"{data}: {len(train_pairs)} training pairs now, {state['train_pairs']} when the checkpoint "
                          "was written: the resumed run's batches and epochs differ from an uninterrupted one", stacklevel=2)
        history = _read_history(reports / "training_history.csv", start)

    net = model
    if ddp.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    result = TrainResult(run_dir, latest.weights_path if latest else None, start, types, history, start)
    if start >= cfg.iters:
        return result

    writer = None
    if ddp.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start + 1 if start else None)
    vloaders = val_loaders(val_table, cfg.val_crop, cfg.batch_size, cfg.val_max_per_type, 0, ddp.rank, ddp.world)
    from unirain_model.evaluation import input_validation
    from unirain_model.previews import TrainingPreviews

    # Once: the rainy inputs' own validation L1/PSNR (what the curves must beat), and a few fixed crops
    # per type whose input | output | target grid goes to TensorBoard at every validation.
    baseline = input_validation(vloaders, device, ddp.all_sum)
    previews = TrainingPreviews(val_table, per_type=2, crop=cfg.val_crop) if writer else None
    loader = train_loader(train_table, cfg.crop, cfg.batch_size, cfg.seed, start, cfg.iters,
                          cfg.num_workers, ddp.rank, ddp.world, pin_memory=device.type == "cuda", sampler=cfg.sampler)
    bar = None
    plain = ddp.main and show_progress_bar and not sys.stderr.isatty()  # a log file or a worker: plain lines
    if ddp.main and show_progress_bar and not plain:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.iters, initial=start, desc="train", unit="it", dynamic_ncols=True)
    line_every = max(1, math.ceil(PLAIN_PROGRESS_FRACTION * cfg.iters))

    def save() -> Path:
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                 "rng": _rng_state(device), "reweighter": reweighter.state_dict(),
                 "weights": [float(w) for w in weights], "types": types, "train_config": cfg.model_dump(mode="json"),
                 "train_pairs": len(train_pairs), "epoch_iters": epoch_iters,
                 "loss_since_eval": (float(eval_loss), eval_n)}
        path = ckpt.save_checkpoint(ckpt_dir, model, mcfg, it, types, state, keep=cfg.keep_checkpoints)
        _write_history(reports / "training_history.csv", history)
        plot_history(history, types, reports / "training_history.png")
        say(f"iteration {it}: checkpoint saved to {path}", bar)
        return path

    it = start
    t0, loss_sum, loss_n = time.perf_counter(), torch.zeros((), device=device), 0
    t_start = time.perf_counter()
    line_t, line_it, line_loss, line_n = t_start, start, torch.zeros((), device=device), 0  # plain progress lines
    # mean training loss between validations (history); a resumed run continues the checkpoint's sum
    eval_loss, eval_n = torch.tensor(float(loss_since_eval[0]), device=device), int(loss_since_eval[1])
    net.train()
    try:
        for x, y, type_idx in loader:
            x, y, type_idx = x.to(device, non_blocking=True), y.to(device, non_blocking=True), type_idx.to(device)
            with autocast():
                pred = net(x)
                aux = model.aux_loss()
            err = pred.float() - y
            per_sample = per_sample_loss(err, loss_at(it, cfg), cfg.charbonnier_eps)
            loss = weighted_type_loss(per_sample, type_idx, weights) + cfg.aux_weight * aux.float()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            it += 1
            loss_sum += loss.detach()  # a device tensor: no host sync per step
            loss_n += 1
            line_loss += loss.detach()
            line_n += 1
            eval_loss += loss.detach()
            eval_n += 1
            info: dict[str, Any] = {}
            if it % cfg.log_every == 0 or it == cfg.iters:
                lr = optimizer.param_groups[0]["lr"]
                info = {"loss": float(loss_sum) / loss_n, "lr": float(lr), "aux": float(aux.detach()),
                        "it_per_s": loss_n / (time.perf_counter() - t0)}
                if writer:
                    writer.add_scalar("train/loss", info["loss"], it)
                    writer.add_scalar("train/aux_loss", info["aux"], it)
                    writer.add_scalar("train/lr", lr, it)
                if bar:
                    bar.set_postfix(loss=f"{info['loss']:.4f}", lr=f"{lr:.2e}")
                t0, loss_sum, loss_n = time.perf_counter(), torch.zeros((), device=device), 0
            rw_due = it % rw_period == 0  # the reweighting clock (a pure function of `it`: resume keeps it)
            if it % cfg.eval_every == 0 or it == cfg.iters or rw_due:
                val = validate(net, vloaders, device, autocast, ddp)
                losses = np.array([val[t]["l1"] for t in types])
                # With its own clock (`every` set) CoBa updates on its ticks only; evaluations in between are
                # logged and keep the weights. Without one it updates at every evaluation.
                update = rw_due or rw.every is None
                if update and np.all(np.isfinite(losses)):
                    weights = reweighter.update(losses)
                elif update:
                    warnings.warn(f"iteration {it}: no readable validation pair for some type; weights kept", stacklevel=2)
                row = _history_row(it, types, val, weights, reweighter)
                row["train_loss"] = float(eval_loss) / eval_n if eval_n else None
                row["lr"] = float(optimizer.param_groups[0]["lr"])
                eval_loss, eval_n = torch.zeros((), device=device), 0
                row["reweighted"] = int(update)  # 1 where the reweighter took this evaluation's losses
                row.update({f"input_{k}_{t}": baseline[t][k] for t in types for k in ("l1", "psnr")})
                history.append(row)
                info.update({"val_l1": {t: float(val[t]["l1"]) for t in types},
                             "weights": {t: float(w) for t, w in zip(types, weights)}})
                if writer:
                    _log_eval(writer, it, row, types)
                    previews.log(writer, model, it, device, autocast)
                if ddp.main:
                    say(_validation_line(it, types, val, baseline, weights, row["af"]), bar)
                if ddp.main:
                    _write_history(reports / "training_history.csv", history)
            if (it % cfg.ckpt_every == 0 or it == cfg.iters) and ddp.main:
                result.checkpoint = save()
            if it % cfg.ckpt_every == 0:
                ddp.barrier()  # no rank runs ahead of a checkpoint being written
            if bar:
                bar.update(1)
            elif plain and (it % line_every == 0 or it == cfg.iters or time.perf_counter() - line_t >= PLAIN_PROGRESS_SECONDS):
                now = time.perf_counter()
                say(f"train {it}/{cfg.iters} ({100 * it / cfg.iters:.0f}%): loss {float(line_loss) / line_n:.4f}, "
                    f"lr {float(optimizer.param_groups[0]['lr']):.2e}, {(it - line_it) / max(now - line_t, 1e-9):.2f} it/s")
                line_t, line_it, line_loss, line_n = now, it, torch.zeros((), device=device), 0
            if info and progress and ddp.main:
                progress(it, cfg.iters, info)
    finally:
        if bar:
            bar.close()
        if writer:
            writer.close()
    result.iteration = it
    result.history = history
    if ddp.main and it > start:
        wall = time.perf_counter() - t_start
        last = history[-1] if history else {}
        gains = " ".join(f"{t}={float(last[f'val_psnr_{t}']) - float(last[f'input_psnr_{t}']):+.2f}"
                         for t in types if last.get(f"val_psnr_{t}") is not None and last.get(f"input_psnr_{t}") is not None)
        say(f"trained iterations {start + 1}-{it} of {cfg.iters} in {wall:.0f} s ({(it - start) / max(wall, 1e-9):.2f} it/s)"
            + (f"; last validation PSNR gain over the input (dB): {gains}" if gains else "")
            + f"; checkpoint {result.checkpoint}")
    return result


def _validation_line(it: int, types: list[str], val: dict, baseline: dict, weights, af) -> str:
    """`iteration N: val L1 ... | PSNR ... (input ...) | weights ... | AF=...`, plain numbers only."""
    msg = (f"iteration {it}: val L1 " + " ".join(f"{t}={float(val[t]['l1']):.4f}" for t in types)
           + " | PSNR " + " ".join(f"{t}={float(val[t]['psnr']):.2f} (input {float(baseline[t]['psnr']):.2f})" for t in types)
           + " | weights " + " ".join(f"{t}={float(w):.3f}" for t, w in zip(types, weights)))
    if af is not None:
        msg += f" | AF={float(af):.3f}"
    return msg


def _history_row(it: int, types: list[str], val: dict, weights: np.ndarray, reweighter) -> dict[str, Any]:
    row: dict[str, Any] = {"iteration": it}
    for i, t in enumerate(types):
        row[f"val_l1_{t}"] = val[t]["l1"]
        row[f"val_psnr_{t}"] = val[t]["psnr"]
        row[f"weight_{t}"] = float(weights[i])
    tbs, tss, af = getattr(reweighter, "last_tbs", None), getattr(reweighter, "last_tss", None), getattr(reweighter, "last_af", None)
    for i, t in enumerate(types):
        row[f"tbs_{t}"] = None if tbs is None else float(tbs[i])
        row[f"tss_{t}"] = None if tss is None else float(tss[i])
    row["af"] = af
    return row


def _log_eval(writer, it: int, row: dict[str, Any], types: list[str]) -> None:
    for t in types:
        for key, tag in (("val_l1", "val_l1"), ("val_psnr", "val_psnr"), ("input_l1", "val_l1_input"), ("input_psnr", "val_psnr_input"),
                         ("weight", "weights"), ("tbs", "coba/tbs"), ("tss", "coba/tss")):
            v = row.get(f"{key}_{t}")
            if v is not None and np.isfinite(v):
                writer.add_scalar(f"{tag}/{t}", v, it)
    if row.get("af") is not None:
        writer.add_scalar("coba/af", row["af"], it)
