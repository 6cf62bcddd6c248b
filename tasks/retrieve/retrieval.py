"""The three-level retrieval (issue 3), as pure functions over numpy arrays: no Prefect here.

Per candidate pair:
  level 1 `semantic_level`: the `k_semantic` gallery items nearest by L2 between caption-text
          embeddings (a FAISS search, or exact L2 over a plain matrix);
  level 2 `visual_level`:   of those, the `k_visual` with the highest image cosine (a gather of
          k_semantic gallery rows per candidate, not a second search over the whole gallery);
  level 3 `ssim_level`:     of those, the one with the highest SSIM (`tasks.retrieve.ssim`) to the
          candidate's rainy image.
`retrieve_batch` turns one batch of candidates into `retrieval` manifest rows plus rejects;
`retrieve_stream` runs over an iterable of batches (levels 1+2 on blocks of `SEARCH_BLOCK`
candidates, level 3 one candidate at a time) and yields per `batch_size` candidates, so memory does
not grow with the number of candidates. The gallery is the fixed side: its SSIM statistics are
computed once per image and kept in a bounded LRU (`RefStatsCache`) shared by all batches.

Gallery rows are addressed by position ("row") in one fixed id order; a `SearchFn` must return rows
in that order (build the text index from the same id list, or reorder the image matrix to the
index's sidecar order). Row -1 means "no hit" (an approximate index may find fewer than k).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from tasks.config import RetrievalConfig
from tasks.imageio import ImageRejected, load_rgb
from tasks.retrieve.ssim import SSIMStats, gray_for_ssim, prepare_ssim_stats, ssim_one_to_many
from tasks.stage import stage_reject

STAGE = "retrieve"

# (queries (n, d) float32, k) -> (L2 distances (n, k), rows (n, k) int64, -1 = no hit). True
# distances, not FAISS's squared ones.
SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def faiss_search_fn(index) -> SearchFn:
    """A SearchFn over a FAISS L2 index: a raw `faiss.Index`, or anything holding one as `.index`
    (`tasks.embed.faiss_index.IdIndex`; then the gallery's id order must be its `.ids`)."""
    index = getattr(index, "index", index)
    if getattr(index, "metric_type", None) not in (None, 1):  # faiss.METRIC_L2 == 1
        raise ValueError("level 1 ranks by L2: the caption-text index must use the L2 metric")

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        dist, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), int(k))
        return np.sqrt(np.maximum(dist, 0.0)), rows.astype(np.int64, copy=False)

    return search


def matrix_search_fn(gallery_text_emb: np.ndarray) -> SearchFn:
    """Exact L2 search over a plain (G, d) matrix (an `IndexFlatL2` built on the spot)."""
    import faiss

    x = np.ascontiguousarray(gallery_text_emb, dtype=np.float32)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    return faiss_search_fn(index)


def _as_queries(emb: np.ndarray, name: str) -> np.ndarray:
    q = np.ascontiguousarray(emb, dtype=np.float32)
    if q.ndim != 2:
        raise ValueError(f"{name}: expected an (n, d) array, got shape {q.shape}")
    return q


def semantic_level(search: SearchFn | np.ndarray, cand_text_emb: np.ndarray, k_semantic: int,
                   usable: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Level 1: the k_semantic nearest gallery rows by caption-text L2, nearest first.

    `search` is a SearchFn or the gallery's (G, d) text matrix. Returns (text_l2, rows), both
    (n, k') with k' = min(k_semantic, G) when G is known; rows -1 (and text_l2 NaN) where there is
    no hit. `usable` (G,) bool, when given, tells G; rows with `usable[row]` False are dropped
    after searching that many more, so a candidate still gets k_semantic usable rows."""
    q = _as_queries(cand_text_emb, "candidate text embeddings")
    if isinstance(search, np.ndarray):
        n_gallery = search.shape[0]
        search = matrix_search_fn(search)
    else:
        n_gallery = None if usable is None else len(usable)
    n_bad = 0 if usable is None else int((~usable).sum())  # searched for, then dropped
    k = int(k_semantic) + n_bad
    if n_gallery is not None:
        k = min(k, n_gallery)
    if k < 1 or q.shape[0] == 0:
        return np.zeros((q.shape[0], 0), np.float32), np.zeros((q.shape[0], 0), np.int64)
    dist, rows = search(q, k)
    rows = np.asarray(rows, np.int64)
    if n_bad:
        rows = np.where((rows >= 0) & usable[np.maximum(rows, 0)], rows, -1)
        order = np.argsort(rows < 0, axis=1, kind="stable")[:, :min(k_semantic, k)]  # usable hits first
        rows, dist = np.take_along_axis(rows, order, 1), np.take_along_axis(dist, order, 1)
    dist = np.where(rows >= 0, dist, np.nan).astype(np.float32)
    return dist, rows


def visual_level(cand_img_emb: np.ndarray, gallery_img_emb: np.ndarray, semantic_rows: np.ndarray,
                 k_visual: int, chunk: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Level 2: of each candidate's level-1 rows, the k_visual with the highest image cosine.

    Embeddings are L2-normalised, so cosine is the inner product. Returns (image_cos, rows, cols),
    each (n, k'') with k'' = min(k_visual, k'): `cols` are positions in `semantic_rows` (to fetch
    that row's text_l2); padding has rows -1, cols -1, image_cos NaN. Ties keep level-1 order."""
    q = _as_queries(cand_img_emb, "candidate image embeddings")
    n, k1 = semantic_rows.shape
    k2 = min(int(k_visual), k1)
    cos = np.empty((n, k1), np.float32)
    for s in range(0, n, chunk):  # a small (chunk, k1, d) gather: ~2x faster than 256 here (cache, no page faults)
        r = semantic_rows[s:s + chunk]
        emb = gallery_img_emb[np.maximum(r, 0)]
        cos[s:s + chunk] = np.matmul(emb, q[s:s + chunk, :, None])[..., 0]
    cos[semantic_rows < 0] = -np.inf
    cols = np.argsort(-cos, axis=1, kind="stable")[:, :k2]
    best = np.take_along_axis(cos, cols, 1)
    rows = np.take_along_axis(semantic_rows, cols, 1)
    missing = rows < 0
    return np.where(missing, np.nan, best).astype(np.float32), rows, np.where(missing, -1, cols)


class RefStatsCache:
    """SSIM statistics of gallery images, computed on first use and kept in a bounded LRU.

    One 256x256 reference costs ~1 MB (image + three filtered maps); the default 1 GiB holds ~1,000.
    An unreadable gallery image is remembered (`failed[row] = (reason, detail)`) and never retried.
    Thread-safe, so one cache can serve every shard task of a process (two threads missing the same
    row at once may both compute it; the result is the same)."""

    def __init__(self, paths: Sequence[str], size: int, max_bytes: int = 1 << 30):
        self.paths, self.size, self.max_bytes = paths, int(size), int(max_bytes)
        self._lru: OrderedDict[int, SSIMStats] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.failed: dict[int, tuple[str, str]] = {}
        self._unreported: list[int] = []
        self.hits = self.misses = 0

    def get(self, row: int) -> SSIMStats | None:
        with self._lock:
            hit = self._lru.get(row)
            if hit is not None:
                self._lru.move_to_end(row)
                self.hits += 1
                return hit
            if row in self.failed:
                return None
            self.misses += 1
        try:  # decode and filter outside the lock
            stats = prepare_ssim_stats(gray_for_ssim(load_rgb(self.paths[row]), self.size))
        except ImageRejected as exc:
            with self._lock:
                if row not in self.failed:
                    self.failed[row] = (exc.reason, exc.detail)
                    self._unreported.append(row)
            return None
        with self._lock:
            if row not in self._lru:
                self._lru[row] = stats
                self._bytes += stats.nbytes
            while self._bytes > self.max_bytes and len(self._lru) > 1:
                _, old = self._lru.popitem(last=False)
                self._bytes -= old.nbytes
        return stats

    def new_failures(self) -> list[tuple[int, str, str]]:
        """Unreadable gallery rows found since the last call: (row, reason, detail), each once."""
        with self._lock:
            out = [(r, *self.failed[r]) for r in self._unreported]
            self._unreported = []
        return out

    def __len__(self) -> int:
        return len(self._lru)


def ssim_level(cand_gray: np.ndarray, ref_rows: np.ndarray,
               ref_stats: Callable[[int], SSIMStats | None]) -> tuple[float, int]:
    """Level 3 for one candidate: of its level-2 gallery rows, the position with the highest SSIM
    to the candidate's (S, S) grayscale rainy image (`tasks.retrieve.ssim.gray_for_ssim`). `ref_stats(row)`
    gives a gallery image's stats, or None when it cannot be read (that reference is skipped).
    Returns (ssim, position in ref_rows), or (nan, -1) when no reference is readable. Ties keep
    level-2 order (higher cosine first)."""
    refs, where = [], []
    for j, row in enumerate(ref_rows):
        st = ref_stats(int(row)) if row >= 0 else None
        if st is not None:
            refs.append(st)
            where.append(j)
    if not refs:
        return float("nan"), -1
    scores = ssim_one_to_many(prepare_ssim_stats(cand_gray), refs)
    b = int(np.argmax(scores))
    return float(scores[b]), where[b]


@dataclass
class Gallery:
    """The fixed side: ids (row order), L2-normalised image embeddings, image paths, level-1 search."""

    ids: np.ndarray  # object array of image_id strings
    image_emb: np.ndarray  # (G, d) float32
    paths: Sequence[str]
    text_search: SearchFn
    usable: np.ndarray  # (G,) bool: False for rows with a non-finite image or text embedding
    rejects: list[dict] = field(default_factory=list)  # bad gallery rows, once

    def __len__(self) -> int:
        return len(self.ids)


def make_gallery(ids: Sequence[str], image_emb: np.ndarray, paths: Sequence[str], *,
                 text_emb: np.ndarray | None = None, text_search: SearchFn | None = None) -> Gallery:
    """Give exactly one of `text_emb` (a (G, d) matrix, searched exactly) or `text_search` (e.g.
    `faiss_search_fn(id_index.index)`, rows in `ids` order). Gallery rows with NaN/inf embeddings
    are never matched and are listed in `gallery.rejects` (`bad_embedding`)."""
    if len(ids) == 0:
        raise ValueError("empty gallery: retrieval needs at least one real-rain gallery image "
                         "(ingest a gallery folder, or check that its images were not all rejected)")
    if (text_emb is None) == (text_search is None):
        raise ValueError("give exactly one of text_emb or text_search")
    img = np.ascontiguousarray(image_emb, dtype=np.float32)
    if img.shape[0] != len(ids) or len(paths) != len(ids):
        raise ValueError(f"{len(ids)} gallery ids, {img.shape[0]} image embeddings, {len(paths)} paths")
    usable = np.isfinite(img).all(axis=1)
    if text_emb is not None:
        txt = np.ascontiguousarray(text_emb, dtype=np.float32)
        if txt.shape[0] != len(ids):
            raise ValueError(f"{len(ids)} gallery ids, {txt.shape[0]} text embeddings")
        usable &= np.isfinite(txt).all(axis=1)
        text_search = matrix_search_fn(np.where(usable[:, None], txt, 0.0))
    if not usable.any():
        raise ValueError("empty gallery: every gallery image has a NaN or infinite embedding")
    id_arr = np.asarray(list(ids), dtype=object)
    if len(set(id_arr.tolist())) != len(id_arr):
        raise ValueError("gallery ids must be unique")
    rejects = [stage_reject(id_arr[r], STAGE, "bad_embedding", "gallery image: NaN or infinite embedding",
                            path=str(paths[r])) for r in np.flatnonzero(~usable)]
    if not usable.all():
        img = img.copy()  # never write into the caller's array
        img[~usable] = 0.0
    return Gallery(id_arr, img, paths, text_search, usable, rejects)


class CandidateBatch(NamedTuple):
    pair_ids: Sequence[str]
    text_emb: np.ndarray  # (n, d) caption-text embeddings of the rainy images
    image_emb: np.ndarray  # (n, d) image embeddings of the rainy images
    rainy_paths: Sequence[str]


# Levels 1+2 run on blocks of this many candidates: FAISS pays a per-call cost (OpenMP start-up,
# spin-waits on a loaded machine) that made batches of 1024 ~1.5x slower than one big search here,
# while blocks of 4096 searched as fast as one call; a block's 512-d embeddings take 16 MB.
SEARCH_BLOCK = 4096


class Shortlists(NamedTuple):
    """Levels 1+2 for the candidates of a batch that have finite embeddings (`keep`: positions)."""

    keep: np.ndarray
    text_l2: np.ndarray
    semantic_rows: np.ndarray
    image_cos: np.ndarray
    visual_rows: np.ndarray
    visual_cols: np.ndarray


def shortlist(gallery: Gallery, batch: CandidateBatch, cfg: RetrievalConfig) -> tuple[Shortlists, list[dict]]:
    """Levels 1+2 for a batch, plus `bad_embedding` rejects for candidates with NaN/inf embeddings."""
    n = len(batch.pair_ids)
    if not (len(batch.text_emb) == len(batch.image_emb) == len(batch.rainy_paths) == n):
        raise ValueError("candidate batch: pair_ids, text_emb, image_emb and rainy_paths differ in length")
    if n == 0:  # an empty batch may come as empty lists
        text = image = np.zeros((0, gallery.image_emb.shape[1]), np.float32)
    else:
        text = np.asarray(batch.text_emb, dtype=np.float32).reshape(n, -1)
        image = np.asarray(batch.image_emb, dtype=np.float32).reshape(n, -1)
    ok = np.isfinite(text).all(axis=1) & np.isfinite(image).all(axis=1)
    rejects = []
    for i in np.flatnonzero(~ok):
        which = [nm for nm, a in (("text", text[i]), ("image", image[i])) if not np.isfinite(a).all()]
        rejects.append(stage_reject(batch.pair_ids[i], STAGE, "bad_embedding",
                                    f"NaN or infinite {' and '.join(which)} embedding", path=str(batch.rainy_paths[i])))
    keep = np.flatnonzero(ok)
    if keep.size < n:  # copies only when some rows are dropped
        text, image = text[keep], image[keep]
    text_l2, sem_rows = semantic_level(gallery.text_search, text, cfg.k_semantic, gallery.usable)
    image_cos, vis_rows, vis_cols = visual_level(image, gallery.image_emb, sem_rows, cfg.k_visual)
    return Shortlists(keep, text_l2, sem_rows, image_cos, vis_rows, vis_cols), rejects


def finish(gallery: Gallery, batch: CandidateBatch, sl: Shortlists, cfg: RetrievalConfig, cache: RefStatsCache,
           lo: int = 0, hi: int | None = None) -> tuple[list[dict], list[dict]]:
    """Level 3 and the manifest rows for shortlisted candidates `sl.keep[lo:hi]`, one candidate
    image in memory at a time; then any gallery image found unreadable since the last call."""
    rows: list[dict] = []
    rejects: list[dict] = []
    ids = gallery.ids
    for j in range(lo, len(sl.keep) if hi is None else min(hi, len(sl.keep))):
        i = sl.keep[j]
        pid, path = batch.pair_ids[i], str(batch.rainy_paths[i])
        sem = sl.semantic_rows[j][sl.semantic_rows[j] >= 0]
        vis = sl.visual_rows[j][sl.visual_rows[j] >= 0]
        if vis.size == 0:
            rejects.append(stage_reject(pid, STAGE, "no_reference", "no gallery item passed levels 1 and 2", path=path))
            continue
        try:
            gray = gray_for_ssim(load_rgb(path), cfg.ssim_size)
        except ImageRejected as exc:
            rejects.append(stage_reject(pid, STAGE, exc.reason, exc.detail, path=path))
            continue
        score, c = ssim_level(gray, sl.visual_rows[j], cache.get)
        if c < 0:
            rejects.append(stage_reject(pid, STAGE, "no_reference",
                                        f"none of the {vis.size} level-2 references could be read", path=path))
            continue
        rows.append({
            "pair_id": pid,
            "ref_id": ids[sl.visual_rows[j, c]],
            "text_l2": float(sl.text_l2[j, sl.visual_cols[j, c]]),
            "image_cos": float(sl.image_cos[j, c]),
            "ssim": score,
            "semantic_ids": ids[sem].tolist(),
            "visual_ids": ids[vis].tolist(),
        })
    for r, reason, detail in cache.new_failures():
        rejects.append(stage_reject(ids[r], STAGE, reason, f"gallery image dropped from level 3: {detail}",
                                    path=str(gallery.paths[r])))
    return rows, rejects


def retrieve_batch(gallery: Gallery, batch: CandidateBatch, cfg: RetrievalConfig,
                   cache: RefStatsCache) -> tuple[list[dict], list[dict]]:
    """One batch of candidates -> (`retrieval` rows, rejects). Candidate rejects: `bad_embedding`
    (NaN/inf embedding), `unreadable` & co. (the rainy image fails to load), `no_reference` (no
    readable reference left). A gallery image that fails to load is dropped from level 3 and
    reported once per cache (item_id = its image_id)."""
    sl, rejects = shortlist(gallery, batch, cfg)
    rows, more = finish(gallery, batch, sl, cfg, cache)
    return rows, rejects + more


def _concat(parts: list[CandidateBatch]) -> CandidateBatch:
    if len(parts) == 1:
        return parts[0]
    return CandidateBatch([p for b in parts for p in b.pair_ids], np.concatenate([b.text_emb for b in parts]),
                          np.concatenate([b.image_emb for b in parts]), [p for b in parts for p in b.rainy_paths])


def _blocks(batches: Iterable[CandidateBatch], size: int) -> Iterator[CandidateBatch]:
    """Input batches regrouped into blocks of about `size` candidates (never more than size plus
    one input batch)."""
    pending: list[CandidateBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += len(batch.pair_ids)
        if count >= size:
            block = _concat(pending)
            pending, count = [], 0  # drop the parts before the block is used
            yield block
    if pending:
        yield _concat(pending)


def retrieve_stream(gallery: Gallery, batches: Iterable[CandidateBatch], cfg: RetrievalConfig,
                    cache: RefStatsCache | None = None,
                    search_block: int = SEARCH_BLOCK) -> Iterator[tuple[list[dict], list[dict]]]:
    """Retrieval over an iterable of candidate batches, yielding (rows, rejects) per `cfg.batch_size`
    candidates. Levels 1+2 run on blocks of ~`search_block` candidates (big FAISS searches), level 3
    per candidate; nothing accumulates beyond one block and the bounded reference cache."""
    if cache is None:
        cache = RefStatsCache(gallery.paths, cfg.ssim_size)
    for block in _blocks(batches, search_block):
        sl, rejects = shortlist(gallery, block, cfg)
        if len(sl.keep) == 0:
            yield [], rejects
            continue
        for lo in range(0, len(sl.keep), cfg.batch_size):
            rows, more = finish(gallery, block, sl, cfg, cache, lo, lo + cfg.batch_size)
            yield rows, rejects + more
            rejects = []
