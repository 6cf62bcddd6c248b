"""Caption, embed/index and retrieve through the generic stage flow on tiny models: outputs, resume, refusals."""
import json

import pandas as pd
import pytest

from data_manifests import RunLayout, read_manifest, shard_files
from tasks.pipeline import STAGE_ORDER

SIZE = (96, 96)


def stage(name, run, cfg):
    from flows.stage import run_stage_flow

    return run_stage_flow(name, str(run), cfg)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, tiny_models, prefect_harness):
    from tasks.offline.synth import synthesize_gallery, synthesize_paired

    root = tmp_path_factory.mktemp("stages")
    synthesize_paired(root / "paired", per_type=2, seed=3, size=SIZE)
    synthesize_gallery(root / "gallery", n=6, seed=4, size=SIZE)
    (root / "gallery" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    cfg = tiny_models.config.model_copy(update={"sources": [f"unirain={root / 'paired'}"],
                                                "gallery": [str(root / "gallery")]})
    run = root / "run"
    for name in STAGE_ORDER[:STAGE_ORDER.index("retrieve") + 1]:
        stage(name, run, cfg)
    return RunLayout.at(run), cfg


def test_every_candidate_gets_a_reference_with_evidence(small_run):
    layout, cfg = small_run
    cands = read_manifest(layout.manifest("candidates"), "candidates")
    gallery = read_manifest(layout.manifest("gallery"), "gallery")
    captions = read_manifest(layout.manifest("captions"), "captions")
    assert len(cands) == 8 and len(gallery) == 6
    assert set(captions["item_id"]) == set(cands["pair_id"]) | set(gallery["image_id"])
    assert captions["caption"].str.len().gt(0).all() and captions["model"].nunique() == 1
    retrieval = read_manifest(layout.manifest("retrieval"), "retrieval")
    assert sorted(retrieval["pair_id"]) == sorted(cands["pair_id"])
    assert set(retrieval["ref_id"]) <= set(gallery["image_id"])
    k1 = min(cfg.retrieval.k_semantic, len(gallery))
    k2 = min(cfg.retrieval.k_visual, k1)
    for row in retrieval.itertuples():
        assert len(row.semantic_ids) == k1 and len(row.visual_ids) == k2
        assert set(row.visual_ids) <= set(row.semantic_ids) and row.ref_id in row.visual_ids
        assert -1.0 <= row.ssim <= 1.0 and -1.0 <= row.image_cos <= 1.0 and row.text_l2 >= 0
    rejects = read_manifest(layout.rejects, "rejects")
    assert rejects[rejects["stage"] == "ingest"]["reason"].tolist() == ["unreadable"]  # the corrupt gallery file


def test_indexes_record_model_and_ids_and_refuse_another_model(small_run):
    from tasks.embed.faiss_index import IndexMismatch, load_index
    from tasks.retrieve.stage import load_gallery

    layout, _ = small_run
    model_id = read_manifest(layout.manifest("embeddings"), "embeddings")["model"].iloc[0]
    idx = load_index(layout.indexes / "gallery_text.faiss", expect_model_id=model_id)
    assert idx.ntotal == 6 and idx.meta.metric == "l2"
    assert load_index(layout.indexes / "gallery_image.faiss").meta.metric == "ip"
    side = layout.indexes / "gallery_image.faiss.json"
    original = side.read_text()
    try:
        side.write_text(json.dumps({**json.loads(original), "model_id": "open_clip:ViT-L-14:openai"}))
        with pytest.raises(IndexMismatch, match="ViT-L-14"):
            load_gallery(layout)
    finally:
        side.write_text(original)


def test_crash_mid_stage_resumes_without_duplicates_or_losses(small_run):
    layout, cfg = small_run
    before_caps = read_manifest(layout.manifest("captions"), "captions").sort_values("item_id", ignore_index=True)
    before_ret = read_manifest(layout.manifest("retrieval"), "retrieval").sort_values("pair_id", ignore_index=True)
    # a crash: one shard never published, a half-written temporary file left behind
    lost = shard_files(layout.manifest("captions"))[0]
    lost.unlink()
    (layout.manifest("captions") / f".{lost.name}.999.dead.tmp").write_bytes(b"PAR1")
    lost_ret = shard_files(layout.manifest("retrieval"))[-1]
    lost_ret.unlink()
    kept_mtime = {p: p.stat().st_mtime_ns for p in shard_files(layout.manifest("captions"))}
    totals = stage("caption", layout.root, cfg)
    assert totals["redone"] == 1 and totals["skipped"] == cfg.ingest.num_shards - 1
    assert totals["reasons"] == {"missing": 1}
    assert all(p.stat().st_mtime_ns == m for p, m in kept_mtime.items())  # finished shards untouched
    retrieve = stage("retrieve", layout.root, cfg)  # embed was not rerun: retrieval redoes only its lost shard
    assert retrieve["redone"] == 1 and retrieve["reasons"] == {"missing": 1}
    after_caps = read_manifest(layout.manifest("captions"), "captions").sort_values("item_id", ignore_index=True)
    after_ret = read_manifest(layout.manifest("retrieval"), "retrieval").sort_values("pair_id", ignore_index=True)
    pd.testing.assert_frame_equal(before_caps, after_caps)
    pd.testing.assert_frame_equal(before_ret, after_ret)
    assert not list(layout.manifest("captions").glob(".*.tmp"))


def test_empty_gallery_fails_at_once(tmp_path, tiny_models, prefect_harness):
    from tasks.offline.synth import synthesize_paired

    synthesize_paired(tmp_path / "paired", per_type=1, seed=5, size=SIZE)
    cfg = tiny_models.config.model_copy(update={"sources": [f"unirain={tmp_path / 'paired'}"]})
    for name in STAGE_ORDER[:STAGE_ORDER.index("caption")]:
        stage(name, tmp_path / "run", cfg)
    with pytest.raises(ValueError, match="gallery .* is empty"):
        stage("caption", tmp_path / "run", cfg)
    assert not RunLayout.at(tmp_path / "run").manifest("captions").exists()  # refused before any shard
