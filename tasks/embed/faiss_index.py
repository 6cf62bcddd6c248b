"""FAISS indexes that remember which ids and which model they hold.

`build_index(vectors, ids, metric=..., cfg=..., model_id=..., normalised=...)` -> `IdIndex`;
`save_index(idx, path)` writes `path` (FAISS's own format) and the sidecar `path + ".json"`
(id order, model_id, dim, metric, kind, normalised, ntotal); `load_index(path, expect_model_id,
expect_dim)` refuses an index made by another model or of another dimension (`IndexMismatch`).

Metrics: `l2` for caption-text embeddings (the paper's semantic level), `ip` for normalised image
embeddings (inner product = cosine). `search` returns true L2 distances (FAISS gives squared ones)
or inner products. Kinds (`IndexConfig.kind`): `flat` (exact, the default), `ivf` (IVF-Flat, trained
on the vectors themselves; `nlist` is lowered to ntotal/39 when the gallery is too small to train
it, FAISS's own minimum of 39 points per list), `hnsw` (HNSW-Flat, `efSearch` raised to k).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import faiss
import numpy as np

from tasks.config import IndexConfig

Metric = Literal["l2", "ip"]
SIDECAR_VERSION = 1


class IndexMismatch(ValueError):
    """An index on disk does not match what this run would build or query it with."""


@dataclass(frozen=True)
class IndexMeta:
    model_id: str
    dim: int
    metric: Metric
    kind: str
    normalised: bool
    ntotal: int
    params: dict = field(default_factory=dict)
    version: int = SIDECAR_VERSION


@dataclass
class IdIndex:
    index: faiss.Index
    ids: list[str]
    meta: IndexMeta

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)


@dataclass
class SearchResult:
    """Hits per query, best first. `scores`/`rows` are (n, k') with k' = min(k, ntotal); where an
    approximate index found fewer than k' hits the tail is padded (`rows` -1, `valid` False).
    `ids[i]` and `hit_scores(i)` hold only the valid hits of query i: never a -1 id."""

    scores: np.ndarray  # float32: L2 distance (metric l2) or inner product (metric ip)
    rows: np.ndarray  # int64 positions in the index's id order, -1 for padding
    valid: np.ndarray  # bool
    ids: list[list[str]]

    def hit_scores(self, i: int) -> np.ndarray:
        return self.scores[i][self.valid[i]]


def _faiss_metric(metric: Metric) -> int:
    if metric == "l2":
        return faiss.METRIC_L2
    if metric == "ip":
        return faiss.METRIC_INNER_PRODUCT
    raise ValueError(f"metric must be 'l2' or 'ip', not {metric!r}")


def _as_matrix(vectors: np.ndarray, dim: int | None = None) -> np.ndarray:
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array of vectors, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise IndexMismatch(f"vectors have dimension {x.shape[1]}, the index holds dimension {dim}")
    if not np.isfinite(x).all():
        raise ValueError("vectors contain NaN or inf: reject those rows (bad_embedding) before indexing")
    return x


def build_index(
    vectors: np.ndarray,
    ids: Sequence[str],
    *,
    metric: Metric,
    model_id: str,
    normalised: bool,
    cfg: IndexConfig | None = None,
) -> IdIndex:
    cfg = cfg or IndexConfig()
    x = _as_matrix(vectors)
    n, dim = x.shape
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} vectors")
    if n == 0:
        raise ValueError("cannot build an index over no vectors (empty gallery)")
    if len(set(ids)) != n:
        raise ValueError("ids must be unique")
    fm = _faiss_metric(metric)
    params: dict = {}
    if cfg.kind == "flat":
        index = faiss.IndexFlatL2(dim) if metric == "l2" else faiss.IndexFlatIP(dim)
    elif cfg.kind == "ivf":
        nlist = max(1, min(cfg.nlist, n // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlat(dim, fm), dim, nlist, fm)
        index.train(x)
        index.nprobe = min(cfg.nprobe, nlist)
        params = {"nlist": nlist, "nprobe": int(index.nprobe)}
    elif cfg.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, fm)
        params = {"hnsw_m": cfg.hnsw_m}
    else:  # IndexConfig already restricts this
        raise ValueError(f"index.kind: unknown kind {cfg.kind!r}")
    index.add(x)
    meta = IndexMeta(model_id=model_id, dim=dim, metric=metric, kind=cfg.kind, normalised=normalised,
                     ntotal=n, params=params)
    return IdIndex(index, list(ids), meta)


def sidecar_path(path: str | Path) -> Path:
    return Path(str(path) + ".json")


def save_index(idx: IdIndex, path: str | Path) -> Path:
    """Write index and sidecar, each to a temporary name renamed into place (sidecar last, so a
    crash never leaves a sidecar describing a missing or older index)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    faiss.write_index(idx.index, str(tmp))
    os.replace(tmp, path)
    side = sidecar_path(path)
    tmp_side = side.with_name(side.name + f".tmp{os.getpid()}")
    tmp_side.write_text(json.dumps({**asdict(idx.meta), "ids": idx.ids}))
    os.replace(tmp_side, side)
    return path


def check_compatible(meta: IndexMeta, path: str | Path, expect_model_id: str | None, expect_dim: int | None) -> None:
    problems = []
    if expect_model_id is not None and meta.model_id != expect_model_id:
        problems.append(f"it was built with model {meta.model_id!r}, this run embeds with {expect_model_id!r}")
    if expect_dim is not None and meta.dim != expect_dim:
        problems.append(f"its dimension is {meta.dim}, this run's embeddings have dimension {expect_dim}")
    if problems:
        raise IndexMismatch(
            f"index {path} cannot be used: {'; '.join(problems)}. Rebuild it (delete {path} and its "
            f"{sidecar_path(path).name}) or configure the model it was built with."
        )


def load_index(path: str | Path, expect_model_id: str | None = None, expect_dim: int | None = None) -> IdIndex:
    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file() or not side.is_file():
        raise FileNotFoundError(f"index {path} or its sidecar {side.name} is missing")
    raw = json.loads(side.read_text())
    if raw.get("version") != SIDECAR_VERSION:
        raise IndexMismatch(f"index sidecar {side} has version {raw.get('version')!r}; this code reads {SIDECAR_VERSION}")
    ids = raw.pop("ids")
    meta = IndexMeta(**raw)
    check_compatible(meta, path, expect_model_id, expect_dim)
    index = faiss.read_index(str(path))
    if index.ntotal != meta.ntotal or len(ids) != meta.ntotal or index.d != meta.dim:
        raise IndexMismatch(
            f"index {path} holds {index.ntotal} vectors of dimension {index.d}, its sidecar says "
            f"{meta.ntotal} of dimension {meta.dim} ({len(ids)} ids): the files are from different builds"
        )
    if meta.kind == "ivf":
        index.nprobe = meta.params.get("nprobe", index.nprobe)
    return IdIndex(index, ids, meta)


def search(idx: IdIndex, queries: np.ndarray, k: int) -> SearchResult:
    """The k best hits per query (fewer when the index holds fewer than k vectors)."""
    q = _as_matrix(queries, idx.meta.dim)
    k_eff = min(int(k), idx.ntotal)
    if k_eff < 1 or q.shape[0] == 0:
        empty = np.zeros((q.shape[0], 0))
        return SearchResult(empty.astype(np.float32), empty.astype(np.int64), empty.astype(bool), [[] for _ in q])
    if idx.meta.kind == "hnsw":
        hnsw = faiss.downcast_index(idx.index).hnsw
        hnsw.efSearch = max(hnsw.efSearch, k_eff)
    dist, rows = idx.index.search(q, k_eff)
    valid = rows >= 0
    scores = np.sqrt(np.maximum(dist, 0.0)) if idx.meta.metric == "l2" else dist
    scores = np.where(valid, scores, np.nan).astype(np.float32)
    id_arr = np.asarray(idx.ids, dtype=object)
    if valid.all():  # exact indexes: one gather, no per-query Python work
        hit_ids = id_arr[rows].tolist()
    else:
        hit_ids = [id_arr[r[v]].tolist() for r, v in zip(rows, valid)]
    return SearchResult(scores, rows.astype(np.int64), valid, hit_ids)
