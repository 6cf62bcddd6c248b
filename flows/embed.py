"""Embed stage flow: CLIP embeddings of captions and images, then the gallery's FAISS indexes."""
from __future__ import annotations

import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from data_manifests import RunLayout, read_manifest
from tasks.captioning import caption_items
from tasks.config import EmbedConfig, IndexConfig, IngestConfig, ModelRef
from tasks.embedders import build_embedder, embedder_model_id
from tasks.embedding import STAGE, build_gallery_indexes, embed_shard
from tasks.loaded_models import cached_model
from tasks.stage import check_model, write_result

from .artifacts import publish_funnel, publish_manifest_link
from .shards import run_stage_shards


@task(name="embed-shard", cache_policy=NO_CACHE)
def embed_shard_task(run: str, shard: int, items, model: ModelRef, cfg: EmbedConfig, ingest: IngestConfig):
    embedder = cached_model("embedder", model, cfg, build_embedder)
    table, rejects = embed_shard(items, embedder, cfg, ingest)
    return write_result(RunLayout.at(run), "embeddings", STAGE, shard, table, rejects), len(rejects)


@task(name="build-gallery-indexes", cache_policy=NO_CACHE)
def build_indexes_task(run: str, cfg: IndexConfig, model_id: str) -> dict:
    return build_gallery_indexes(RunLayout.at(run), cfg, model_id)


def embed_items(layout: RunLayout) -> pd.DataFrame:
    captions = read_manifest(layout.manifest("captions"), "captions", columns=["item_id", "kind", "caption"])
    return caption_items(layout).merge(captions, on=["item_id", "kind"], how="inner")


@flow(name="embed", log_prints=True)
def embed_flow(run: str, model: ModelRef, embed: EmbedConfig | None = None, index: IndexConfig | None = None,
               ingest: IngestConfig | None = None) -> dict:
    """Embed every captioned item and (re)build the gallery indexes under RUN/indexes."""
    cfg, index, ingest = embed or EmbedConfig(), index or IndexConfig(), ingest or IngestConfig()
    layout = RunLayout.at(run)
    model_id = embedder_model_id(model)  # the model loads in the shard tasks that run
    check_model(layout, "embeddings", model_id)
    totals = run_stage_shards(
        layout, STAGE, "embeddings", embed_items(layout), "item_id", ingest.num_shards, embed_shard_task,
        lambda i, items: dict(run=str(layout.root), shard=i, items=items, model=model, cfg=cfg, ingest=ingest),
    )
    totals["index"] = build_indexes_task(str(layout.root), index, model_id)
    publish_manifest_link(layout, "embeddings")
    publish_funnel(layout)
    print(f"embed: {totals}")
    return totals
