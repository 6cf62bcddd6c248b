"""Caption stage: BLIP captions for gallery images and candidates' rainy images."""
from __future__ import annotations

import pandas as pd

from data_manifests import RunLayout, read_manifest

from tasks.caption.backends import Captioner
from tasks.config import CaptionConfig, IngestConfig
from tasks.pipeline import STAGE_ORDER, spec
from tasks.stage import Stage, stage_reject

STAGE = "caption"
ITEM_COLUMNS = ["item_id", "kind", "path", "source"]


def caption_items(run: RunLayout) -> pd.DataFrame:
    """Everything to caption: gallery images (`kind=gallery`) and candidates' rainy images (`kind=candidate`)."""
    gallery = run.absolute_paths(read_manifest(run.manifest("gallery"), "gallery", columns=["image_id", "path", "source"]),
                                 ("path",))
    from tasks.screen import live_candidates  # not the pairs a screening stage (leak_check, ...) rejected

    cands = run.absolute_paths(live_candidates(run, STAGE, ["pair_id", "rainy_path", "source"]), ("rainy_path",))
    items = pd.concat([
        pd.DataFrame({"item_id": gallery["image_id"], "kind": "gallery", "path": gallery["path"], "source": gallery["source"]}),
        pd.DataFrame({"item_id": cands["pair_id"], "kind": "candidate", "path": cands["rainy_path"], "source": cands["source"]}),
    ], ignore_index=True)
    return items[ITEM_COLUMNS]


def caption_shard(items: pd.DataFrame, captioner: Captioner, cfg: CaptionConfig,
                  ingest: IngestConfig | None = None) -> tuple[list[dict], list[dict]]:
    """Captions and rejects for one shard of items; an image that fails here is a reject, never a crash."""
    from tasks.image_batches import iter_batches  # torch: imported only where a shard is processed

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


def require_gallery(run: RunLayout) -> None:
    from data_manifests import count_rows

    if count_rows(run.manifest("gallery"), "gallery") == 0:
        raise ValueError(f"the gallery of {run.root} is empty: retrieval needs real rainy photos; "
                         "ingest some with --gallery PATH (or `gallery:` in the config)")


class CaptionStage(Stage):
    """Captions of every gallery image and candidate rainy image (`models.captioner`)."""

    spec = spec("caption")
    # ingest and every screening stage before caption (leak_check, ...): their rejects drop out here, and a
    # redone screening stage must redo caption whatever its own upstream is
    upstream = STAGE_ORDER[:STAGE_ORDER.index("caption")]
    CODE_VERSION = 1

    def ref(self):
        from tasks.config import require_local_model

        ref = self.cfg.models.captioner
        if ref is None:
            raise ValueError("models.captioner: not set in the config")
        from tasks.caption.backends import CAPTIONERS

        require_local_model(ref, "models.captioner", CAPTIONERS.get(ref.backend))
        return ref

    def config_section(self) -> dict:
        return {"caption.max_new_tokens": self.cfg.caption.max_new_tokens,
                "ingest.max_pixels": self.cfg.ingest.max_pixels,
                "models.captioner.options": self.ref().options}

    def model_id(self) -> str:
        from tasks.caption.backends import captioner_model_id

        return captioner_model_id(self.ref())

    def setup_key(self) -> str:
        from tasks.stage import digest

        return digest(["caption", self.ref().model_dump(mode="json"), self.cfg.caption.model_dump(mode="json")])

    def check(self, run: RunLayout) -> None:
        require_gallery(run)

    def items(self, run: RunLayout) -> pd.DataFrame:
        return caption_items(run)

    def setup(self) -> None:
        from tasks.caption.backends import build_captioner

        self.captioner = build_captioner(self.ref(), self.cfg.caption)

    def process_shard(self, run: RunLayout, shard: int, rows: pd.DataFrame):
        return caption_shard(rows, self.captioner, self.cfg.caption, self.cfg.ingest)
