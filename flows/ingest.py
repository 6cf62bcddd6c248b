"""The ingest flow: sources and gallery folders -> candidates, gallery and rejects manifests."""
from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from data_manifests import RunLayout
from tasks import ingest as ing
from tasks.config import IngestConfig, TaskRunnerConfig
from tasks.sources import parse_gallery, parse_sources

from .artifacts import publish_funnel, publish_manifest_link, publish_preview
from .runners import make_task_runner

CACHED = dict(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)


@task(name="probe-pairs", **CACHED)
def probe_pairs_task(source: str, listings: list, cfg: IngestConfig, signature: str):
    return ing.probe_pairs(source, listings, cfg)


@task(name="probe-gallery", **CACHED)
def probe_gallery_task(source: str, paths: list, cfg: IngestConfig, signature: str):
    return ing.probe_gallery(source, paths, cfg)


def _chunk_signature(run_signature: str, source: str, index: int) -> str:
    return f"{run_signature}:{source}:{index}"


@flow(name="ingest", log_prints=True)
def ingest_flow(run: str, sources: list[str] | None = None, gallery: list[str] | None = None,
                ingest: IngestConfig | None = None) -> dict:
    """List, hash and probe every source pair and gallery image of a run; write the manifests."""
    cfg = ingest or IngestConfig()
    layout = RunLayout.at(run).create()
    specs = parse_sources(sources or [])
    galleries = parse_gallery(gallery or [])
    listings = {spec.name: ing.list_source(spec) for spec in specs}
    gallery_paths = {folder.name: ing.list_gallery(folder) for folder in galleries}
    signature = ing.listing_signature(specs, listings, gallery_paths, cfg)
    if ing.ingest_complete(layout, signature, cfg.num_shards):
        print(f"ingest: {layout.root} is up to date, nothing to do")
        return ing.existing_counts(layout)

    futures = []
    for spec in specs:
        for i, chunk in enumerate(ing.chunked(listings[spec.name], cfg.chunk_size)):
            futures.append(("pairs", probe_pairs_task.submit(spec.name, chunk, cfg, _chunk_signature(signature, spec.name, i))))
    for name, paths in gallery_paths.items():
        for i, chunk in enumerate(ing.chunked(paths, cfg.chunk_size)):
            futures.append(("gallery", probe_gallery_task.submit(name, chunk, cfg, _chunk_signature(signature, name, i))))
    candidates, images, rejects = [], [], []
    for kind, future in futures:
        rows, bad = future.result()
        (candidates if kind == "pairs" else images).extend(rows)
        rejects.extend(bad)
    candidates = ing.drop_duplicates(candidates, "pair_id", rejects, "pair")
    images = ing.drop_duplicates(images, "image_id", rejects, "image")
    counts = ing.publish(layout, candidates, images, rejects, signature, cfg.num_shards)
    for stage in ("candidates", "gallery", "rejects"):
        publish_manifest_link(layout, stage)
    publish_preview(layout, "candidates", ing.read_candidates(layout))
    publish_funnel(layout)
    print(f"ingest: {counts['candidates']} candidate pairs, {counts['gallery']} gallery images, {counts['rejects']} rejects")
    return counts


def run_ingest(run: str | Path, sources: list[str], gallery: list[str], cfg: IngestConfig | None = None,
               runner: TaskRunnerConfig | None = None) -> dict:
    flow_ = ingest_flow.with_options(task_runner=make_task_runner(runner or TaskRunnerConfig()))
    return flow_(run=str(run), sources=sources, gallery=gallery, ingest=cfg or IngestConfig())
