"""Retrieve stage flow: every candidate's closest real-rain reference, shard by shard."""
from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from data_manifests import RunLayout, read_manifest, shard_complete, get_schema, write_shard
from tasks.config import IngestConfig, RetrievalConfig
from tasks.retrieval_stage import STAGE_GALLERY_REJECTS, cached_gallery, retrieve_shard, unique_rejects
from tasks.retrieval import STAGE
from tasks.stage import write_result

from .artifacts import publish_funnel, publish_manifest_link, publish_preview
from .shards import run_stage_shards


@task(name="retrieve-shard", cache_policy=NO_CACHE)
def retrieve_shard_task(run: str, shard: int, cfg: RetrievalConfig):
    layout = RunLayout.at(run)
    rows, rejects, gallery_rejects = retrieve_shard(layout, shard, cached_gallery(layout), cfg)
    write_result(layout, "retrieval", STAGE, shard, rows, rejects)
    return len(rows), len(rejects), gallery_rejects


@flow(name="retrieve", log_prints=True)
def retrieve_flow(run: str, retrieval: RetrievalConfig | None = None, ingest: IngestConfig | None = None) -> dict:
    """Semantic (caption text L2) -> visual (image cosine) -> SSIM retrieval for every candidate."""
    cfg, ingest = retrieval or RetrievalConfig(), ingest or IngestConfig()
    layout = RunLayout.at(run)
    gallery = cached_gallery(layout)  # fails now, naming the problem, if the indexes are unusable
    items = read_manifest(layout.manifest("candidates"), "candidates", columns=["pair_id"])
    gallery_rejects = list(gallery.rejects)
    totals = run_stage_shards(
        layout, STAGE, "retrieval", items, "pair_id", ingest.num_shards, retrieve_shard_task,
        lambda i, _items: dict(run=str(layout.root), shard=i, cfg=cfg),
        collect=gallery_rejects,
    )
    write_gallery_rejects(layout, gallery_rejects)
    publish_manifest_link(layout, "retrieval")
    publish_preview(layout, "retrieval", read_manifest(layout.manifest("retrieval"), "retrieval"))
    publish_funnel(layout)
    print(f"retrieve: {totals}")
    return totals


def write_gallery_rejects(layout: RunLayout, new: list[dict]) -> None:
    """Gallery items found unusable, merged with those of earlier (resumed) runs, written once."""
    schema = get_schema("rejects")
    path = layout.rejects / STAGE_GALLERY_REJECTS
    old = read_manifest(layout.rejects, schema, prefix=path.stem).to_dict("records") if shard_complete(path, schema) else []
    write_shard(unique_rejects(old + new), path.parent, path.name, schema)
