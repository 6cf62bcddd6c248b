"""The `leak_check` stage: no training pair may copy an image of a benchmark test set.

Where it lives and why. It is its own stage, right after ingest (and the other model-free screening
stages), before any model runs:
  - its input is the test sets (`leak_check.test_sets`), not the sources: a change of test sets must
    redo this check and what follows it, never ingest's hashing and probing of millions of files;
  - it is per-pair and model-free (perceptual hashes), so it shards like the model stages and costs
    two small decodes per pair (one per image: a clean image shared by several pairs of a shard is
    decoded once); a pair it rejects is never captioned, embedded or judged;
  - the sanity stage needs the same decode: while a sanity check is on, this stage also keeps each
    image's sanity views in a per-shard hand-off file (`tasks.sanity.view_cache`), so the two
    stages decode each image once between them;
  - its fingerprint hashes the test sets' listing (relative path, size, mtime of every test image),
    the thresholds and the code version, so changing a test set redoes it (and, through its new
    generation, every later stage).

Per pair it writes a `leak_check` row (closest test hash in bits, the best confirmed match and its
correlation, CLIP cosine when asked, `test_leak`) and, for a leak, a `test_leak` reject whose detail
names the test image. With no test sets configured it passes every pair without decoding anything.
Decision rule and thresholds: `tasks.leak.check`, measurements: `tasks.leak.phash`.
"""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pandas as pd

from data_manifests import RunLayout, bytes_digest
from tasks.imageio import ImageRejected, decode_reduced, read_image_bytes
from tasks.leak.check import is_near_duplicate, nearest
from tasks.leak.phash import DECODE_SIDE, Hashes, grey_of, hash_variants
from tasks.leak.test_sets import LeakIndex, cached_index, list_test_images, listing
from tasks.pipeline import STAGE_ORDER, spec
from tasks.screen import live_candidates
from tasks.sanity.view_cache import ViewWriter, clean_views, shard_path
from tasks.sanity.views import DRAFT_SIDE, reduce_image
from tasks.stage import Stage, digest, stage_reject

STAGE = "leak_check"
REASON = "test_leak"
IMAGES = ("clean", "rainy")   # candidate images checked, in this order


class LeakCheckStage(Stage):
    """Candidates whose clean or rainy image is a near duplicate of a test image -> `test_leak` rejects."""

    spec = spec(STAGE)
    upstream = STAGE_ORDER[:STAGE_ORDER.index(STAGE)]  # ingest and any screening stage before this one
    CODE_VERSION = 2  # 2: zoomed-in test crops

    def __init__(self, cfg, num_shards: int):
        super().__init__(cfg, num_shards)
        self._images = None

    @property
    def section(self):
        return self.cfg.leak_check

    def test_images(self):
        if self._images is None:
            self._images = list_test_images(self.section.test_sets)
        return self._images

    def uses_clip(self) -> bool:
        return bool(self.section.test_sets) and self.section.clip_min_cos is not None and self.cfg.models.embedder is not None

    def config_section(self) -> dict:
        s = self.section
        if not s.test_sets:
            return {"leak_check.test_sets": []}
        return {"leak_check.test_sets": list(s.test_sets), "leak_check.listing": digest(listing(self.test_images())),
                "leak_check.max_distance": s.max_distance, "leak_check.min_correlation": s.min_correlation,
                "leak_check.clip_min_cos": s.clip_min_cos if self.uses_clip() else None}

    def model_id(self) -> str | None:
        if not self.uses_clip():
            return None
        from tasks.embed.backends import embedder_model_id

        return embedder_model_id(self.cfg.models.embedder)

    def setup_key(self) -> str:
        return digest(["leak_check", self.config_section(), self.model_id()])

    def check(self, run: RunLayout) -> None:
        """Build (or read) the test hashes once before the shards, and say what could not be read."""
        clean_views(run)
        if self.section.test_sets:
            index = self.index(run)
            print(f"leak_check: {len(index)} test images hashed from {len(self.section.test_sets)} test set(s)"
                  + (f"; {len(index.unreadable)} unreadable, not checked: {'; '.join(index.unreadable[:3])}"
                     if index.unreadable else ""))

    def index(self, run: RunLayout) -> LeakIndex:
        key = digest([self.CODE_VERSION, listing(self.test_images())])
        cached = getattr(self, "_index", None)
        if cached is None or cached[0] != key:
            self._index = (key, cached_index(self.test_images(), run.cache / "leak", key))
        return self._index[1]

    def items(self, run: RunLayout) -> pd.DataFrame:
        cands = live_candidates(run, STAGE, ["pair_id", "source", "rainy_path", "clean_path", "rainy_id", "clean_id"])
        return run.absolute_paths(cands, ("rainy_path", "clean_path"))

    def keeps_views(self) -> bool:
        """Whether decoding here also keeps the sanity views (`tasks.sanity.view_cache`): only for a
        sanity stage with a check on, and only while both decode at the same reduced size. Not in the
        fingerprint: it changes no row of this stage, only how the next one gets its pixels."""
        from tasks.sanity.stage import enabled_checks

        return DECODE_SIDE == DRAFT_SIDE and bool(enabled_checks(self.cfg.sanity))

    def process_shard(self, run: RunLayout, shard: int, rows: pd.DataFrame):
        if not self.section.test_sets or rows.empty:
            return pass_all(rows), [], {"test_leaks": 0}
        with ViewWriter(shard_path(run, shard)) if self.keeps_views() else nullcontext() as views:
            out, rejects = check_pairs(rows, self.index(run), self.section.max_distance,
                                       self.section.min_correlation, views)
        if self.uses_clip():
            confirm_with_clip(out, rows, self, rejects)
        out = out.assign(test_leak=out["test_leak"].astype(bool))
        leaks = out[out["test_leak"]]
        paths = rows.set_index("pair_id")
        for r in leaks.itertuples(index=False):
            cos = "" if pd.isna(r.clip_cos) else f", CLIP cosine {r.clip_cos:.3f}"
            rejects.append(stage_reject(
                r.pair_id, STAGE, REASON,
                f"{r.leak_image} image is a near duplicate of test image {r.nearest_test} "
                f"({int(r.test_distance)} of 64 hash bits differ at the best crop, low-frequency correlation "
                f"{r.test_correlation:.3f}{cos})", paths.at[r.pair_id, "source"], paths.at[r.pair_id, "rainy_path"]))
        return out, rejects, {"test_leaks": len(leaks)}


OUTPUT_COLUMNS = ["pair_id", "min_test_distance", "nearest_test", "leak_image", "test_distance",
                  "test_correlation", "clip_cos", "test_leak"]


def pass_all(rows: pd.DataFrame) -> pd.DataFrame:
    """Every pair passes (no test sets): rows without scores, nothing decoded."""
    n = len(rows)
    return pd.DataFrame({"pair_id": rows["pair_id"].to_numpy(), "min_test_distance": pd.array([None] * n, "Int16"),
                         "nearest_test": None, "leak_image": None, "test_distance": pd.array([None] * n, "Int16"),
                         "test_correlation": np.nan, "clip_cos": np.nan, "test_leak": False}, columns=OUTPUT_COLUMNS)


def hash_pair_images(rows: pd.DataFrame, views: ViewWriter | None = None) -> tuple[Hashes, list[int], list[dict]]:
    """Hashes of every pair's clean and rainy image (2 per pair, in `IMAGES` order), the row of each
    hashed pair, and `unreadable` rejects for pairs an image of which cannot be decoded. Each image
    (by ingest's content id) is decoded once per shard; with `views`, its sanity views are kept too."""
    parts, kept, rejects = [], [], []
    done: dict[str, Hashes] = {}
    for i, r in enumerate(rows.itertuples(index=False)):
        try:
            parts.append(Hashes.concat([image_hash(getattr(r, f"{k}_path"), getattr(r, f"{k}_id", None), done, views)
                                        for k in IMAGES]))
        except ImageRejected as exc:
            rejects.append(stage_reject(r.pair_id, STAGE, exc.reason, exc.detail, r.source, r.rainy_path))
            continue
        kept.append(i)
    return Hashes.concat(parts), kept, rejects


def image_hash(path: str, image_id: str | None, done: dict[str, Hashes], views: ViewWriter | None) -> Hashes:
    """One image's hash: decoded once (`done` by content id), its views handed to `views` when its bytes
    are the ones ingest hashed (never a stale entry for a file changed since)."""
    if image_id is not None and image_id in done:
        return done[image_id]
    data = read_image_bytes(path)
    img, size = decode_reduced(data, DECODE_SIDE, name=str(path))
    hashed = hash_variants(grey_of(img))
    if image_id is not None:
        done[image_id] = hashed
        if views is not None and bytes_digest(data) == image_id:
            views.add(image_id, reduce_image(img), size)
    return hashed


def check_pairs(rows: pd.DataFrame, index: LeakIndex, max_distance: int, min_correlation: float,
                views: ViewWriter | None = None):
    """(`leak_check` rows with `test_leak` from the hashes alone, rejects of unreadable pairs)."""
    hashes, kept, rejects = hash_pair_images(rows, views)
    found = nearest(hashes, index, max_distance)
    dup = is_near_duplicate(found, min_correlation).reshape(-1, len(IMAGES))
    corr = np.nan_to_num(found.correlation, nan=-2.0).reshape(-1, len(IMAGES))
    best = np.argmax(np.where(dup, corr + 10.0, corr), axis=1)  # a confirmed image first, then the best score
    pick = np.arange(len(kept)) * len(IMAGES) + best
    has = found.test[pick] >= 0
    out = pd.DataFrame({
        "pair_id": rows["pair_id"].to_numpy()[kept],
        "min_test_distance": pd.array(found.min_distance.reshape(-1, len(IMAGES)).min(1).astype(int), "Int16"),
        "nearest_test": [index.names[t] if t >= 0 else None for t in found.test[pick]],
        "leak_image": np.where(has, np.array(IMAGES)[best], None),
        "test_distance": pd.array(np.where(has, found.distance[pick].astype(int), None).tolist(), "Int16"),
        "test_correlation": found.correlation[pick],
        "clip_cos": np.full(len(kept), np.nan, np.float32),
        "test_leak": dup.any(1),
    }, columns=OUTPUT_COLUMNS)
    return out, rejects


def confirm_with_clip(out: pd.DataFrame, rows: pd.DataFrame, stage: LeakCheckStage, rejects: list) -> None:
    """For the hash matches only: CLIP image cosine of the candidate image and the test image; a
    match under `clip_min_cos` is not a leak. The embedder loads only when a shard has a match."""
    hits = np.flatnonzero(out["test_leak"].to_numpy())
    if not len(hits):
        return
    from tasks.imageio import load_rgb

    embedder = getattr(stage, "_embedder", None)
    if embedder is None:
        from tasks.embed.backends import build_embedder

        embedder = stage._embedder = build_embedder(stage.cfg.models.embedder, stage.cfg.embed)
    import torch

    paths = rows.set_index("pair_id")
    tests = {t.name: t.path for t in stage.test_images()}
    for i in hits:
        pair_id, image, test = out.at[i, "pair_id"], out.at[i, "leak_image"], out.at[i, "nearest_test"]
        try:
            pics = [load_rgb(paths.at[pair_id, f"{image}_path"]), load_rgb(tests[test])]
        except ImageRejected:
            continue  # decoded a moment ago for the hash: keep the hash's verdict
        with torch.inference_mode():
            vecs = embedder.encode_images(torch.stack([embedder.preprocess(p) for p in pics]))
        cos = float(np.dot(vecs[0], vecs[1]))
        out.at[i, "clip_cos"] = cos
        if cos < stage.section.clip_min_cos:
            out.at[i, "test_leak"] = False
