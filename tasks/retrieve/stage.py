"""Retrieve stage: per candidate shard, the three levels against the run's gallery indexes."""
from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from data_manifests import RunLayout, get_schema, read_manifest, shard_name, write_shard

from tasks.config import RetrievalConfig
from tasks.pipeline import spec
from tasks.stage import Stage
from tasks.embed.stage import IMAGE_INDEX, TEXT_INDEX, read_embeddings, vectors
from tasks.embed.faiss_index import load_index
from tasks.retrieve.retrieval import CandidateBatch, Gallery, RefStatsCache, faiss_search_fn, make_gallery, retrieve_stream


def embeddings_model(run: RunLayout) -> str:
    models = set(read_embeddings(run, "gallery", columns=["model", "kind"]).column("model").to_pylist())
    if len(models) != 1:
        raise ValueError(f"{run.manifest('embeddings')}: expected gallery embeddings of one model, found {sorted(models) or 'none'}")
    return models.pop()


_GALLERIES: dict[tuple, Gallery] = {}


def cached_gallery(run: RunLayout) -> Gallery:
    """One loaded gallery per process and index version: shard tasks (threads or Dask workers)
    load it themselves instead of receiving an unpicklable FAISS index."""
    key = (str(run.root), *((run.indexes / f).stat().st_mtime_ns for f in (TEXT_INDEX, IMAGE_INDEX)))
    if key not in _GALLERIES:
        _GALLERIES.clear()
        _GALLERIES[key] = load_gallery(run)
    return _GALLERIES[key]


_REF_CACHES: dict[tuple[int, int], RefStatsCache] = {}


def shared_ref_cache(gallery: Gallery, ssim_size: int) -> RefStatsCache:
    """One (thread-safe) cache of reference SSIM statistics per process, shared by its shards."""
    key = (id(gallery), ssim_size)
    if key not in _REF_CACHES:
        _REF_CACHES.clear()
        _REF_CACHES[key] = RefStatsCache(gallery.paths, ssim_size)
    return _REF_CACHES[key]


def load_gallery(run: RunLayout) -> Gallery:
    """Gallery rows in the text index's id order; indexes of another model or dimension are refused."""
    model_id = embeddings_model(run)
    text = load_index(run.indexes / TEXT_INDEX, expect_model_id=model_id)
    image = load_index(run.indexes / IMAGE_INDEX, expect_model_id=model_id, expect_dim=text.meta.dim)
    if image.ids != text.ids:
        raise ValueError(f"{run.indexes}: the text and image indexes hold different id orders; rebuild them (unirain distill --until embed)")
    emb = read_embeddings(run, "gallery", columns=["item_id", "kind", "image_emb"])
    position = {item_id: i for i, item_id in enumerate(emb.column("item_id").to_pylist())}
    missing = [i for i in text.ids if i not in position]
    if missing:
        raise ValueError(f"{run.indexes}: {len(missing)} indexed gallery ids have no embedding; rebuild the indexes")
    image_emb = vectors(emb, "image_emb")[[position[i] for i in text.ids]]
    gallery = run.absolute_paths(read_manifest(run.manifest("gallery"), "gallery", columns=["image_id", "path", "source"]),
                                 ("path",))
    paths = gallery.set_index("image_id")["path"]
    return make_gallery(text.ids, image_emb, [paths[i] for i in text.ids], text_search=faiss_search_fn(text.index))


def candidate_batches(run: RunLayout, shard: int, rainy_paths: pd.Series, batch_size: int):
    """The shard's candidate embeddings, in bounded batches (embeddings are sharded like candidates)."""
    import pyarrow.parquet as pq

    path = run.manifest("embeddings") / shard_name(shard)
    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=batch_size, columns=["item_id", "kind", "text_emb", "image_emb"]):
        table = pa.Table.from_batches([batch])
        table = table.filter(pc.equal(table.column("kind"), "candidate"))
        if table.num_rows == 0:
            continue
        ids = table.column("item_id").to_pylist()
        yield CandidateBatch(ids, vectors(table, "text_emb"), vectors(table, "image_emb"), [rainy_paths[i] for i in ids])


def retrieve_shard(run: RunLayout, shard: int, gallery: Gallery,
                   cfg: RetrievalConfig) -> tuple[list[dict], list[dict], list[dict]]:
    """(retrieval rows, candidate rejects, gallery rejects) for one shard."""
    rows, rejects = [], []
    rainy_paths = rainy_path_index(run, shard)
    cache = shared_ref_cache(gallery, cfg.ssim_size)
    for got, bad in retrieve_stream(gallery, candidate_batches(run, shard, rainy_paths, cfg.batch_size), cfg, cache):
        rows.extend(got)
        rejects.extend(bad)
    gallery_ids = set(gallery.ids.tolist())
    candidate_rejects = [r for r in rejects if r["item_id"] not in gallery_ids]
    gallery_rejects = [r for r in rejects if r["item_id"] in gallery_ids]
    return rows, candidate_rejects, gallery_rejects


def rainy_path_index(run: RunLayout, shard: int) -> pd.Series:
    """Rainy paths of one shard's candidates (candidates are sharded like every later stage)."""
    import pyarrow.parquet as pq

    cands = pq.read_table(run.manifest("candidates") / shard_name(shard), columns=["pair_id", "rainy_path", "source"])
    cands = run.absolute_paths(cands.to_pandas(), ("rainy_path",))
    return cands.set_index("pair_id")["rainy_path"]


def unique_rejects(rows: list[dict]) -> list[dict]:
    seen, out = set(), []
    for row in rows:
        key = (row["item_id"], row["reason"])
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out




STAGE_GALLERY_REJECTS = "part-retrieve-gallery.parquet"


def write_gallery_rejects(run: RunLayout, new: list[dict], replace: bool) -> None:
    """Gallery items found unusable (the same item may fail in several shards: kept once). After a
    partial redo they are merged with the earlier ones; after a full redo they replace them."""
    from data_manifests import shard_complete

    schema = get_schema("rejects")
    path = run.rejects / STAGE_GALLERY_REJECTS
    old = [] if replace or not shard_complete(path, schema) else \
        read_manifest(run.rejects, schema, prefix=path.stem).to_dict("records")
    write_shard(unique_rejects(old + new), path.parent, path.name, schema)


class RetrieveStage(Stage):
    """Every candidate's closest real-rain reference: semantic -> visual -> SSIM (`retrieval:`)."""

    spec = spec("retrieve")
    upstream = ("embed",)
    CODE_VERSION = 1

    def config_section(self) -> dict:
        r = self.cfg.retrieval
        return {"retrieval.k_semantic": r.k_semantic, "retrieval.k_visual": r.k_visual,
                "retrieval.ssim_size": r.ssim_size,  # level 1 searches the index: an approximate one finds others
                **{f"index.{k}": v for k, v in self.cfg.index.model_dump(mode="json").items()}}

    def setup_key(self) -> str:
        return "retrieve"  # nothing to load per config: the gallery is cached per run and index version

    def check(self, run: RunLayout) -> None:
        cached_gallery(run)  # fails now, naming the problem, if the indexes are unusable

    def items(self, run: RunLayout) -> pd.DataFrame:
        return read_manifest(run.manifest("candidates"), "candidates", columns=["pair_id"])

    def process_shard(self, run: RunLayout, shard: int, rows: pd.DataFrame):
        kept, rejects, gallery_rejects = retrieve_shard(run, shard, cached_gallery(run), self.cfg.retrieval)
        return kept, rejects, {"gallery_rejects": gallery_rejects}

    def finish(self, run: RunLayout, redone: list[int], totals: dict) -> dict:
        found = totals.pop("gallery_rejects", [])
        if redone:
            new = list(cached_gallery(run).rejects) + list(found)
            write_gallery_rejects(run, new, replace=len(redone) == self.num_shards)
        return {}
