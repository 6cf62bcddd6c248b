"""Caption stage: BLIP captions for gallery images and candidates' rainy images."""
from __future__ import annotations

import pandas as pd

from data_manifests import RunLayout, read_manifest

from .captioners import Captioner
from .config import CaptionConfig, IngestConfig
from .image_batches import iter_batches
from .stage import stage_reject

STAGE = "caption"
ITEM_COLUMNS = ["item_id", "kind", "path", "source"]


def caption_items(run: RunLayout) -> pd.DataFrame:
    """Everything to caption: gallery images (`kind=gallery`) and candidates' rainy images (`kind=candidate`)."""
    gallery = read_manifest(run.manifest("gallery"), "gallery", columns=["image_id", "path", "source"])
    cands = read_manifest(run.manifest("candidates"), "candidates", columns=["pair_id", "rainy_path", "source"])
    items = pd.concat([
        pd.DataFrame({"item_id": gallery["image_id"], "kind": "gallery", "path": gallery["path"], "source": gallery["source"]}),
        pd.DataFrame({"item_id": cands["pair_id"], "kind": "candidate", "path": cands["rainy_path"], "source": cands["source"]}),
    ], ignore_index=True)
    return items[ITEM_COLUMNS]


def caption_shard(items: pd.DataFrame, captioner: Captioner, cfg: CaptionConfig,
                  ingest: IngestConfig | None = None) -> tuple[list[dict], list[dict]]:
    """Captions and rejects for one shard of items; an image that fails here is a reject, never a crash."""
    ingest = ingest or IngestConfig()
    info = {row.item_id: row for row in items.itertuples(index=False)}
    rows, rejects = [], []
    pairs = list(zip(items["item_id"], items["path"]))
    for batch in iter_batches(pairs, captioner.preprocess, cfg.batch_size, cfg.num_workers, max_pixels=ingest.max_pixels):
        for failure in batch.failures:
            item = info[failure.item_id]
            rejects.append(stage_reject(failure.item_id, STAGE, failure.reason, failure.detail, item.source, item.path))
        if batch.tensor is None:
            continue
        for item_id, text in zip(batch.ids, captioner.caption_batch(batch.tensor)):
            rows.append({"item_id": item_id, "kind": info[item_id].kind, "caption": text, "model": captioner.model_id})
    return rows, rejects
