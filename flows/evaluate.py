"""The `evaluate` flow: PSNR/SSIM (RGB and Y) of a checkpoint per test set and rain type.

Thin: `unirain_model.evaluation` does the work; the flow writes the reports and publishes the
summary as a table artifact (key `<run>-evaluation`, or `evaluation` without a run).
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_table_artifact

from data_manifests import RunLayout

from .artifacts import artifact_key


def default_report_path(run: str | None, checkpoint: str) -> Path:
    if run:
        return RunLayout.at(run).reports / "evaluation"
    ckpt = Path(checkpoint).resolve()
    for parent in (ckpt.parent, *ckpt.parents):
        if (parent / "checkpoints").is_dir():
            return parent / "reports" / "evaluation"
    return Path("evaluation")


@flow(name="evaluate", log_prints=True)
def evaluate_flow(run: str | None = None, config: str | None = None, checkpoint: str | None = None,
                  data: list[str] | None = None, manifest: list[str] | None = None, out: str | None = None,
                  device: str | None = None, tile: int | None = None) -> list[dict]:
    """Score a checkpoint on test sets.

    Args:
        run: run folder; its newest checkpoint is used when `checkpoint` is not given, and reports go to
            RUN/reports/evaluation.{csv,json}.
        config: run config YAML whose `evaluate:` section lists test folders/manifests and options.
        checkpoint: a .safetensors file, a checkpoints folder or a run folder.
        data: test folders in the paper layout (each one test set).
        manifest: test manifests.
        out: report path (OUT.csv, OUT.json and OUT.images.csv are written).
    """
    from unirain_model.config import load_eval_config
    from unirain_model.evaluation import evaluate_checkpoint, format_table, write_reports

    cfg = load_eval_config(config, device=device, tile=tile)
    ckpt = checkpoint or run
    if ckpt is None:
        raise ValueError("evaluate: give a checkpoint or a run folder")
    summary, per_image, meta = evaluate_checkpoint(
        ckpt, data=data or cfg.data, manifests=manifest or cfg.manifests, device=cfg.device,
        crop_border=cfg.crop_border, tile=cfg.tile, tile_overlap=cfg.tile_overlap)
    out_path = Path(out) if out else default_report_path(run, ckpt)
    paths = write_reports(summary, per_image, out_path, meta={"checkpoint": meta["path"], "iteration": meta["iteration"]})
    records = summary.astype(object).where(summary.notna(), None).to_dict(orient="records")
    key = artifact_key(RunLayout.at(run), "evaluation") if run else "evaluation"
    create_table_artifact(key=key, table=records,
                          description=f"PSNR/SSIM (RGB and Y) of `{meta['path']}` (iteration {meta['iteration']})")
    print(format_table(summary))
    print("reports: " + ", ".join(str(p) for p in paths))
    return records
