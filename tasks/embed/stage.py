"""Embed stage: CLIP text embeddings of captions and image embeddings of images; gallery indexes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from data_manifests import RunLayout, get_schema, read_table

from tasks.config import EmbedConfig, IndexConfig, IngestConfig
from tasks.embed.backends import Embedder, nonfinite_rows
from tasks.embed.faiss_index import build_index, load_index, save_index
from tasks.pipeline import spec
from tasks.stage import Stage, stage_reject

STAGE = "embed"
TEXT_INDEX = "gallery_text.faiss"
IMAGE_INDEX = "gallery_image.faiss"


def vectors(table: pa.Table, column: str) -> np.ndarray:
    """A list<float16> column as an (n, dim) float32 matrix, without a Python loop."""
    col = table.column(column).combine_chunks()
    if len(col) == 0:
        return np.zeros((0, 0), np.float32)
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return flat.reshape(len(col), -1)


def _list_column(matrix: np.ndarray) -> pa.Array:
    n, dim = matrix.shape
    values = pa.array(matrix.astype(np.float16).reshape(-1), type=pa.float16())
    return pa.ListArray.from_arrays(pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32)), values)


def embed_shard(items: pd.DataFrame, embedder: Embedder, cfg: EmbedConfig,
                ingest: IngestConfig | None = None) -> tuple[pa.Table, list[dict]]:
    """items: item_id, kind, path, source, caption. Both embeddings must be finite to keep an item."""
    from tasks.image_batches import iter_batches  # torch: imported only where a shard is processed

    ingest = ingest or IngestConfig()
    info = {row.item_id: row for row in items.itertuples(index=False)}
    rejects = []
    text = embedder.encode_texts(items["caption"].tolist()) if len(items) else np.zeros((0, embedder.dim), np.float32)
    text_of = dict(zip(items["item_id"], text))
    image_of: dict[str, np.ndarray] = {}
    pairs = list(zip(items["item_id"], items["path"]))
    for batch in iter_batches(pairs, embedder.preprocess, cfg.batch_size, cfg.num_workers, max_pixels=ingest.max_pixels):
        for failure in batch.failures:
            item = info[failure.item_id]
            rejects.append(stage_reject(failure.item_id, STAGE, failure.reason, failure.detail, item.source, item.path))
        if batch.tensor is not None:
            image_of.update(zip(batch.ids, embedder.encode_images(batch.tensor)))
    kept = []
    for item_id in items["item_id"]:
        if item_id not in image_of:
            continue
        both = np.stack([text_of[item_id], image_of[item_id]])
        bad = nonfinite_rows(both)
        if bad.any():
            which = " and ".join(name for name, b in zip(("text", "image"), bad) if b)
            item = info[item_id]
            rejects.append(stage_reject(item_id, STAGE, "bad_embedding", f"non-finite {which} embedding", item.source, item.path))
        else:
            kept.append(item_id)
    text_m = np.stack([text_of[i] for i in kept]) if kept else np.zeros((0, embedder.dim), np.float32)
    image_m = np.stack([image_of[i] for i in kept]) if kept else np.zeros((0, embedder.dim), np.float32)
    table = pa.table({
        "item_id": pa.array(kept, pa.string()),
        "kind": pa.array([info[i].kind for i in kept], pa.string()),
        "text_emb": _list_column(text_m),
        "image_emb": _list_column(image_m),
        "model": pa.array([embedder.model_id] * len(kept), pa.string()),
    })
    return table, rejects


def read_embeddings(run: RunLayout, kind: str, ids: list[str] | None = None, columns=None) -> pa.Table:
    """Embeddings of one kind; filtered while scanning, so reading the gallery's never loads every
    candidate's vectors."""
    wanted = ds.field("kind") == kind
    if ids is not None:
        wanted = wanted & ds.field("item_id").isin(pa.array(ids, pa.string()))
    return read_table(run.manifest("embeddings"), get_schema("embeddings"), columns=columns, filter=wanted)


def build_gallery_indexes(run: RunLayout, cfg: IndexConfig, model_id: str) -> dict:
    """Text (L2) and image (inner product on unit vectors) indexes over the gallery, reused when current."""
    gallery = read_embeddings(run, "gallery")
    if gallery.num_rows == 0:
        raise ValueError(f"the gallery of {run.root} has no usable images after embedding: "
                         "retrieval needs at least one real-rain reference (see rejects for why)")
    ids = gallery.column("item_id").to_pylist()
    paths = {name: run.indexes / fname for name, fname in (("text", TEXT_INDEX), ("image", IMAGE_INDEX))}
    if all(_index_current(p, model_id, ids, cfg) for p in paths.values()):
        return {"built": False, "ntotal": len(ids)}
    for (name, path), metric in zip(paths.items(), ("l2", "ip")):
        idx = build_index(vectors(gallery, f"{name}_emb"), ids, metric=metric, model_id=model_id, normalised=True, cfg=cfg)
        save_index(idx, path)
    return {"built": True, "ntotal": len(ids)}


def _index_current(path: Path, model_id: str, ids: list[str], cfg: IndexConfig) -> bool:
    from tasks.embed.faiss_index import IndexMismatch

    try:  # an index of another model is replaced: the embed stage redid its embeddings first
        idx = load_index(path, expect_model_id=model_id)
    except (FileNotFoundError, IndexMismatch):
        return False
    return idx.meta.kind == cfg.kind and sorted(idx.ids) == sorted(ids)


def embed_items(run: RunLayout) -> pd.DataFrame:
    """Every captioned item with its caption and image path."""
    from data_manifests import read_manifest

    from tasks.caption.stage import caption_items

    captions = read_manifest(run.manifest("captions"), "captions", columns=["item_id", "kind", "caption"])
    return caption_items(run).merge(captions, on=["item_id", "kind"], how="inner")


class EmbedStage(Stage):
    """CLIP text embeddings of the captions and image embeddings of the images (`models.embedder`),
    then the gallery's FAISS indexes (rebuilt when not current)."""

    spec = spec("embed")
    upstream = ("caption",)
    CODE_VERSION = 1

    def ref(self):
        from tasks.config import require_local_model

        ref = self.cfg.models.embedder
        if ref is None:
            raise ValueError("models.embedder: not set in the config")
        from tasks.embed.backends import EMBEDDERS

        require_local_model(ref, "models.embedder", EMBEDDERS.get(ref.backend))
        return ref

    def config_section(self) -> dict:
        # not `index:`: the embeddings do not depend on it (the indexes are rebuilt in `finish`, and
        # retrieval, whose results do depend on it, has it in its own fingerprint)
        return {"ingest.max_pixels": self.cfg.ingest.max_pixels, "models.embedder.options": self.ref().options}

    def model_id(self) -> str:
        from tasks.embed.backends import embedder_model_id

        return embedder_model_id(self.ref())

    def setup_key(self) -> str:
        from tasks.stage import digest

        return digest(["embed", self.ref().model_dump(mode="json"), self.cfg.embed.model_dump(mode="json")])

    def items(self, run: RunLayout) -> pd.DataFrame:
        return embed_items(run)

    def setup(self) -> None:
        from tasks.embed.backends import build_embedder

        self.embedder = build_embedder(self.ref(), self.cfg.embed)

    def process_shard(self, run: RunLayout, shard: int, rows: pd.DataFrame):
        return embed_shard(rows, self.embedder, self.cfg.embed, self.cfg.ingest)

    def finish(self, run: RunLayout, redone: list[int], totals: dict) -> dict:
        """The gallery indexes: rebuilt after a redo, when missing, or when `index:` changed."""
        import json

        record = run.state / "embed-index.json"
        wanted = {"index": self.cfg.index.model_dump(mode="json"), "model": self.model_id()}
        missing = not all((run.indexes / f).is_file() for f in (TEXT_INDEX, IMAGE_INDEX))
        try:
            current = json.loads(record.read_text()) == wanted
        except (OSError, ValueError):
            current = False
        if not (redone or missing or not current):
            return {}
        built = build_gallery_indexes(run, self.cfg.index, self.model_id())["built"]
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(wanted))
        return {"index_built": int(built)}
