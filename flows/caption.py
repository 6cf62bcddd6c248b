"""Caption stage flow: BLIP captions for gallery and candidate images, shard by shard."""
from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from data_manifests import RunLayout, count_rows
from tasks.captioners import build_captioner, captioner_model_id
from tasks.captioning import STAGE, caption_items, caption_shard
from tasks.config import CaptionConfig, IngestConfig, ModelRef
from tasks.loaded_models import cached_model
from tasks.stage import check_model, write_result

from .artifacts import publish_funnel, publish_manifest_link
from .shards import run_stage_shards


@task(name="caption-shard", cache_policy=NO_CACHE)
def caption_shard_task(run: str, shard: int, items, model: ModelRef, cfg: CaptionConfig, ingest: IngestConfig):
    captioner = cached_model("captioner", model, cfg, build_captioner)
    rows, rejects = caption_shard(items, captioner, cfg, ingest)
    return write_result(RunLayout.at(run), "captions", STAGE, shard, rows, rejects), len(rejects)


def require_gallery(layout: RunLayout) -> None:
    if count_rows(layout.manifest("gallery"), "gallery") == 0:
        raise ValueError(f"the gallery of {layout.root} is empty: retrieval needs real rainy photos; "
                         "ingest some with --gallery PATH (or `gallery:` in the config)")


@flow(name="caption", log_prints=True)
def caption_flow(run: str, model: ModelRef, caption: CaptionConfig | None = None,
                 ingest: IngestConfig | None = None) -> dict:
    """Caption every gallery image and candidate rainy image of a run (resumes shard by shard)."""
    cfg, ingest = caption or CaptionConfig(), ingest or IngestConfig()
    layout = RunLayout.at(run)
    require_gallery(layout)
    check_model(layout, "captions", captioner_model_id(model))  # the model loads in the shard tasks that run
    totals = run_stage_shards(
        layout, STAGE, "captions", caption_items(layout), "item_id", ingest.num_shards, caption_shard_task,
        lambda i, items: dict(run=str(layout.root), shard=i, items=items, model=model, cfg=cfg, ingest=ingest),
    )
    publish_manifest_link(layout, "captions")
    publish_funnel(layout)
    print(f"caption: {totals}")
    return totals
