"""The `evaluate` flow: PSNR/SSIM of a checkpoint per test set and rain type, beside the rainy input's.

Thin: `unirain_model.evaluation` does the work; the flow writes the reports (OUT.csv/.json/.md,
before/after grids) and publishes the summary as a table artifact (key `<run>-evaluation`, or
`evaluation` without a run) and the readable table with the grids embedded as a markdown artifact
(`<run>-evaluation-md`): the Prefect UI cannot open local files, so the images travel inside it.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from data_manifests import RunLayout

from .artifacts import artifact_key
from .ui import run_name, with_routed_logs


def default_report_path(run: str | None, checkpoint: str) -> Path:
    if run:
        return RunLayout.at(run).reports / "evaluation"
    ckpt = Path(checkpoint).resolve()
    for parent in (ckpt.parent, *ckpt.parents):
        if (parent / "checkpoints").is_dir():
            return parent / "reports" / "evaluation"
    return Path("evaluation")


def inline_image(path: str | Path, max_side: int = 480, quality: int = 80) -> str:
    """A grid PNG as a JPEG data URI (tens of kB), for a markdown artifact the UI shows as it is."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        img.thumbnail((max_side, max_side * 4))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def publish_evaluation(key: str, summary, meta: dict) -> list[dict]:
    """Table artifact `key` (model, input, gain and protocol per row) and markdown artifact `key-md`
    (the readable table, protocol named, grids inline). Returns the table's records."""
    from unirain_model.evaluation import format_markdown

    records = summary.astype(object).where(summary.notna(), None).to_dict(orient="records")
    where = f"`{meta['path']}` (iteration {meta['iteration']})"
    create_table_artifact(key=key, table=records,
                          description=f"PSNR/SSIM of {where} and of the rainy input, gain = model - input; "
                                      f"protocol {meta.get('protocol', 'basicsr')}")
    grids = {f"{Path(g).parent.name} / {Path(g).stem}": inline_image(g) for g in meta.get("grids") or []}
    create_markdown_artifact(key=f"{key}-md", markdown=f"# Evaluation of {where}\n\n" + format_markdown(summary, grids),
                             description="Evaluation table (model, input, gain) and before/after grids")
    return records


@flow(name="evaluate", flow_run_name=run_name("evaluate", "checkpoint"), log_prints=True)
@with_routed_logs
def evaluate_flow(run: str | None = None, config: str | None = None, checkpoint: str | None = None,
                  data: list[str] | None = None, manifest: list[str] | None = None, out: str | None = None,
                  device: str | None = None, tile: int | None = None, protocol: str | None = None) -> list[dict]:
    """Score a checkpoint on test sets, beside the rainy inputs' own scores.

    Args:
        run: run folder; its newest checkpoint is used when `checkpoint` is not given, and reports go to
            RUN/reports/evaluation.{csv,json,md} and RUN/reports/evaluation_grids/. A relative path is read
            from the flow run's working folder (the repository for `make serve` deployments, the current
            folder for the CLI): absolute paths are safest.
        config: run config YAML whose `evaluate:` section lists test folders/manifests and options, a path
            read like `run`; paths inside the config are read from the config's own folder.
        checkpoint: a .safetensors file, a checkpoints folder or a run folder.
        data: test folders in the paper layout (each one test set).
        manifest: test manifests.
        out: report path (OUT.csv, OUT.json, OUT.images.csv, OUT.md and OUT_grids/ are written).
        protocol: basicsr or released (overrides `evaluate.protocol`).
    """
    from unirain_model.config import load_eval_config
    from unirain_model.evaluation import evaluate_checkpoint, format_table, grid_folder, write_reports

    cfg = load_eval_config(config, device=device, tile=tile, protocol=protocol)
    ckpt = checkpoint or run
    if ckpt is None:
        raise ValueError("evaluate: give a checkpoint or a run folder")
    from unirain_model.checkpoint import resolve_weights
    from unirain_model.data import run_types

    out_path = Path(out) if out else default_report_path(run, str(resolve_weights(ckpt)))
    summary, per_image, meta = evaluate_checkpoint(
        ckpt, data=data or cfg.data, manifests=manifest or cfg.manifests, device=cfg.device,
        crop_border=cfg.crop_border, tile=cfg.tile, tile_overlap=cfg.tile_overlap, protocol=cfg.protocol,
        grid_dir=grid_folder(out_path), grid_images=cfg.grid_images,
        types=run_types(config) if config else None)  # a config names its types; else every type in the data
    paths = write_reports(summary, per_image, out_path,
                          meta={"checkpoint": meta["path"], "iteration": meta["iteration"], "grids": meta["grids"]})
    key = artifact_key(RunLayout.at(run), "evaluation") if run else "evaluation"
    records = publish_evaluation(key, summary, meta)
    print(format_table(summary))
    print("reports: " + ", ".join(str(p) for p in paths))
    if meta["grids"]:
        print(f"before/after grids: {grid_folder(out_path)}")
    return records
