"""The `train` flow: train the derainer on a run's distilled (or candidate) pairs.

Thin: resolve the config and data, run `unirain_model.trainer.train`, and mirror its progress in a
Prefect progress artifact; the per-type validation losses and weights land in
`RUN/reports/training_history.{csv,png}` and a table artifact. The training report shows the last
validation per type beside the rainy inputs' own score on the same crops, and when the config's
`evaluate:` section names test data the final checkpoint is evaluated there (the `evaluate` flow:
model, input and gain per rain type, before/after grids).
"""
from __future__ import annotations

import time
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact

from data_manifests import RunLayout, shard_files

from .artifacts import artifact_key, publish_table
from .gallery import image_uri
from .ui import run_name, with_routed_logs


def training_data(run: str | Path, manifest: str | Path | None = None) -> Path:
    """`manifest` when given, else RUN/manifests/distilled when it holds shards, else candidates."""
    if manifest:
        return Path(manifest)
    layout = RunLayout.at(run)
    distilled = layout.manifest("distilled")
    return distilled if shard_files(distilled) else layout.manifest("candidates")


class _Progress:
    """Progress callback → Prefect progress artifact, at most one API call every `every_s` seconds."""

    def __init__(self, artifact_id, every_s: float = 2.0):
        self.artifact_id, self.every_s, self.last = artifact_id, every_s, 0.0

    def __call__(self, it: int, total: int, info: dict) -> None:
        now = time.monotonic()
        if it == total or now - self.last >= self.every_s:
            self.last = now
            desc = f"iteration {it}/{total}, loss {info.get('loss', float('nan')):.4f}"
            if "weights" in info:
                desc += ", weights " + ", ".join(f"{k}={v:.3f}" for k, v in info["weights"].items())
            update_progress_artifact(self.artifact_id, progress=100.0 * it / total, description=desc)


@flow(name="train", flow_run_name=run_name("train"), log_prints=True)
@with_routed_logs
def train_flow(run: str, config: str, manifest: str | None = None, iters: int | None = None,
               device: str | None = None, require_distilled: bool = False) -> dict:
    """Train (or resume training) the derainer of run folder `run` with the `train:` section of `config`.

    Args:
        run: the run folder (checkpoints, reports and TensorBoard logs go inside it). A relative path is read
            from the flow run's working folder (the repository for `make serve` deployments, the current
            folder for the CLI): absolute paths are safest.
        config: a run config YAML (its `train:` section names the model config and the schedule; when its
            `evaluate:` section names test data, the final checkpoint is evaluated there), a path read like
            `run`; paths inside the config are read from the config's own folder.
        manifest: training pairs (a manifest folder or a paper-layout folder); default: the run's distilled
            manifest, or its candidates before voting exists.
        iters: total iterations, overriding the config (a resumed run stops there too).
        device: auto, cpu, cuda or cuda:N, overriding the config.
        require_distilled: train only when the run's distillation is complete: a distilled manifest and no
            `undecided` pair; the deployment trigger sets it, so neither a distill stopped early (`--until
            retrieve`) nor one a judge outage left open starts training.
    """
    if require_distilled and not shard_files(RunLayout.at(run).manifest("distilled")):
        print(f"train: {run} has no distilled manifest (distill stopped before select): nothing to train on")
        return {"skipped": "no distilled manifest"}
    if require_distilled:
        from tasks.undecided import undecided_pairs

        open_pairs = undecided_pairs(run)
        if open_pairs:  # `require_distilled` means complete: a judge outage left pairs to ask again
            print(f"train: {run} has {open_pairs} undecided pairs (rerun distill to ask the judges again): "
                  f"not training on an incomplete distillation")
            return {"skipped": f"{open_pairs} undecided pairs"}
    from unirain_model.config import load_eval_config, load_train_config
    from unirain_model.data import run_types
    from unirain_model.trainer import train

    cfg = load_train_config(config, iters=iters, device=device)
    types = run_types(config)  # the config's `types:` (default: the four rain types)
    eval_cfg = load_eval_config(config, device=device)  # a bad evaluate: section fails now, not after training
    layout = RunLayout.at(run).create()
    data = training_data(run, manifest)
    artifact_id = create_progress_artifact(progress=0.0, key=artifact_key(layout, "training-progress"),
                                           description=f"training {layout.root.name} on {data}")
    result = train(cfg, layout.root, data, progress=_Progress(artifact_id), types=types)
    update_progress_artifact(artifact_id, progress=100.0, description=f"done: iteration {result.iteration}")
    if result.history:
        import pandas as pd

        publish_table(layout, "training-history", pd.DataFrame(result.history).tail(50),
                      "Per-type validation L1/PSNR, CoBa TBS/TSS/AF and training weights per evaluation")
    final_val = final_validation_table(result.history[-1], result.types) if result.history else ""
    create_markdown_artifact(
        key=artifact_key(layout, "training-report"),
        markdown=(f"# Training\n\nCheckpoint: `{result.checkpoint}` (iteration {result.iteration} of {cfg.iters}, "
                  f"resumed from {result.resumed_from})\n\nRain types: {', '.join(result.types)}\n\n"
                  + (f"{final_val}\n\n" if final_val else "") +
                  f"History: `{layout.reports / 'training_history.csv'}`\n\n" + _history_chart(layout) +
                  f"TensorBoard: `tensorboard --logdir {layout.root / 'tensorboard'}` (scalars; input | output | target "
                  f"grids under Images at every validation)\n"),
        description="Where the training outputs are, and the last validation against the rainy inputs",
    )
    if final_val:
        print(final_val)
    print(f"train: iteration {result.iteration}/{cfg.iters}, checkpoint {result.checkpoint}")
    out = {"checkpoint": str(result.checkpoint) if result.checkpoint else None, "iteration": result.iteration,
           "types": result.types}
    if result.checkpoint and (eval_cfg.data or eval_cfg.manifests):
        from .evaluate import evaluate_flow

        out["evaluation"] = evaluate_flow(run=str(layout.root), config=config, checkpoint=str(result.checkpoint),
                                          device=device)
    return out


def _history_chart(layout: RunLayout) -> str:
    """The training plot inline (the UI cannot open RUN/reports/training_history.png)."""
    chart = layout.reports / "training_history.png"
    try:
        return f"![training history]({image_uri(chart)})\n\n" if chart.is_file() else ""
    except (OSError, ValueError) as exc:
        return f"(training_history.png unreadable: {exc})\n\n"


def final_validation_table(row: dict, types: list[str]) -> str:
    """Markdown: the last validation's PSNR per type (training crops) beside the rainy inputs' own."""
    lines = ["Last validation (validation split, centre crops; PSNR in dB; input = the rainy crop itself):", "",
             "| rain type | PSNR | input | gain |", "|---|---|---|---|"]
    for t in types:
        model, base = row.get(f"val_psnr_{t}"), row.get(f"input_psnr_{t}")
        if model is None:
            continue
        gain = f"{model - base:+.2f}" if base is not None else "-"
        lines.append(f"| {t} | {model:.2f} | {'-' if base is None else f'{base:.2f}'} | {gain} |")
    return "\n".join(lines)
