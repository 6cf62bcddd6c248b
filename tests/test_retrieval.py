"""Three-level retrieval (tasks.retrieve.retrieval): planted references, small galleries, bad input."""
import faiss
import numpy as np
import pytest
from PIL import Image

from data_manifests import get_schema
from tasks.config import RetrievalConfig
from tasks.retrieve.retrieval import (CandidateBatch, RefStatsCache, faiss_search_fn, make_gallery, retrieve_batch,
                             retrieve_stream, semantic_level, visual_level)
from tasks.offline.synth import get_generator
from tasks.offline.synth.clean_photos import builtin_photo, random_crop

D = 16
SIZE = 64  # ssim_size: small keeps the test fast; the definition does not depend on it


def unit(rng, n, d=D):
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def save(arr, path):
    Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """12 gallery photos (random crops of three built-in photos) and 8 candidates, each a gallery
    photo plus synthetic rain streaks and noise."""
    root = tmp_path_factory.mktemp("retrieval")
    rng = np.random.default_rng(7)
    photos = [builtin_photo(name) for name in ("astronaut", "coffee", "chelsea")]
    gal = [random_crop(photos[i % 3], (96, 96), rng) for i in range(12)]
    gal_paths = [save(g, root / f"g{i}.png") for i, g in enumerate(gal)]
    planted = [0, 3, 5, 6, 8, 9, 10, 11]
    cand_paths = []
    for j, g in enumerate(planted):
        rainy = get_generator("day_streak")(gal[g], rng, "paired").rainy
        rainy = rainy + 0.03 * rng.standard_normal(rainy.shape)
        cand_paths.append(save(rainy, root / f"c{j}.png"))
    return dict(root=root, gal_paths=gal_paths, gal_ids=[f"img{i:02d}" for i in range(12)],
                gal_text=unit(rng, 12), gal_img=unit(rng, 12), planted=planted, cand_paths=cand_paths,
                cand_ids=[f"pair{j}" for j in range(len(planted))],
                cand_text=unit(rng, len(planted)), cand_img=unit(rng, len(planted)))


def gallery_of(w, **kw):
    return make_gallery(w["gal_ids"], w["gal_img"], w["gal_paths"], text_emb=w["gal_text"], **kw)


def batch_of(w, n=None, **over):
    b = dict(pair_ids=w["cand_ids"], text_emb=w["cand_text"], image_emb=w["cand_img"], rainy_paths=w["cand_paths"])
    b.update(over)
    return CandidateBatch(*(b[k][:n] if n else b[k] for k in CandidateBatch._fields))


def run(gallery, batch, **cfg):
    cfg = RetrievalConfig(ssim_size=SIZE, **cfg)
    return retrieve_batch(gallery, batch, cfg, RefStatsCache(gallery.paths, cfg.ssim_size))


def test_planted_reference_is_found_when_levels_1_and_2_keep_everything(world):
    g = gallery_of(world)
    rows, rejects = run(g, batch_of(world), k_semantic=12, k_visual=12)
    assert rejects == []
    assert [r["pair_id"] for r in rows] == world["cand_ids"]
    for r, planted in zip(rows, world["planted"]):
        assert r["ref_id"] == world["gal_ids"][planted]
        assert sorted(r["semantic_ids"]) == sorted(world["gal_ids"]) and sorted(r["visual_ids"]) == sorted(world["gal_ids"])
    # the scores are those of the chosen reference
    j, p = 2, world["planted"][2]
    assert rows[j]["text_l2"] == pytest.approx(np.linalg.norm(world["cand_text"][j] - world["gal_text"][p]), abs=1e-4)
    assert rows[j]["image_cos"] == pytest.approx(float(world["gal_img"][p] @ world["cand_img"][j]), abs=1e-5)
    assert 0.2 < rows[j]["ssim"] < 1.0
    get_schema("retrieval")  # rows carry exactly the manifest's columns
    assert set(rows[0]) == set(get_schema("retrieval").columns)


def test_levels_1_and_2_rank_by_text_l2_then_image_cosine(world):
    q_text, q_img = world["cand_text"], world["cand_img"]
    l2, rows = semantic_level(world["gal_text"], q_text, 5)
    full = np.linalg.norm(q_text[:, None] - world["gal_text"][None], axis=2)
    np.testing.assert_array_equal(rows, np.argsort(full, axis=1)[:, :5])
    np.testing.assert_allclose(l2, np.sort(full, axis=1)[:, :5], atol=1e-5)
    cos, vrows, cols = visual_level(q_img, world["gal_img"], rows, 2)
    for i in range(len(q_img)):
        c = world["gal_img"][rows[i]] @ q_img[i]
        np.testing.assert_array_equal(vrows[i], rows[i][np.argsort(-c)[:2]])
        np.testing.assert_allclose(cos[i], np.sort(c)[::-1][:2], atol=1e-6)
        np.testing.assert_array_equal(rows[i][cols[i]], vrows[i])
    # a FAISS index through a search function gives the same level 1
    index = faiss.IndexFlatL2(D)
    index.add(world["gal_text"])
    l2f, rows_f = semantic_level(faiss_search_fn(index), q_text, 5)
    np.testing.assert_array_equal(rows_f, rows)
    np.testing.assert_allclose(l2f, l2, atol=1e-5)


def test_small_k_chooses_among_the_visual_shortlist_only(world):
    rows, _ = run(gallery_of(world), batch_of(world), k_semantic=4, k_visual=2)
    for r in rows:
        assert len(r["semantic_ids"]) == 4 and len(r["visual_ids"]) == 2
        assert set(r["visual_ids"]) <= set(r["semantic_ids"]) and r["ref_id"] in r["visual_ids"]


def test_fewer_gallery_items_than_k_still_gives_the_best_match(world):
    w = world
    g = make_gallery(w["gal_ids"][:3], w["gal_img"][:3], w["gal_paths"][:3], text_emb=w["gal_text"][:3])
    rows, rejects = run(g, batch_of(w, 1), k_semantic=50, k_visual=10)  # candidate 0 is planted on img00
    assert rejects == []
    assert len(rows[0]["semantic_ids"]) == 3 and len(rows[0]["visual_ids"]) == 3
    assert rows[0]["ref_id"] == "img00"


def test_nan_embedding_is_rejected_and_the_rest_goes_on(world):
    text = world["cand_text"].copy()
    image = world["cand_img"].copy()
    text[1, 0] = np.nan
    image[4, 3] = np.inf
    rows, rejects = run(gallery_of(world), batch_of(world, text_emb=text, image_emb=image), k_semantic=12, k_visual=12)
    assert {r["item_id"]: r["reason"] for r in rejects} == {"pair1": "bad_embedding", "pair4": "bad_embedding"}
    assert "text" in next(r for r in rejects if r["item_id"] == "pair1")["detail"]
    assert [r["pair_id"] for r in rows] == [p for p in world["cand_ids"] if p not in ("pair1", "pair4")]
    assert all(r["stage"] == "retrieve" for r in rejects)


def test_gallery_with_a_nan_embedding_never_matches_that_item(world):
    img = world["gal_img"].copy()
    img[3] = np.nan  # candidate 1 is planted on img03
    before = img.copy()
    g = make_gallery(world["gal_ids"], img, world["gal_paths"], text_emb=world["gal_text"])
    assert [(r["item_id"], r["reason"]) for r in g.rejects] == [("img03", "bad_embedding")]
    np.testing.assert_array_equal(img, before)  # the caller's array is left alone
    rows, _ = run(g, batch_of(world), k_semantic=12, k_visual=12)
    assert all("img03" not in r["semantic_ids"] and r["ref_id"] != "img03" for r in rows)
    assert all(len(r["semantic_ids"]) == 11 for r in rows)
    assert rows[0]["ref_id"] == "img00"


def test_empty_gallery_fails_with_a_clear_message(world):
    with pytest.raises(ValueError, match="empty gallery"):
        make_gallery([], np.zeros((0, D), np.float32), [], text_emb=np.zeros((0, D), np.float32))
    with pytest.raises(ValueError, match="empty gallery"):
        make_gallery(["a"], np.full((1, D), np.nan, np.float32), ["x.png"], text_emb=np.zeros((1, D), np.float32))


def test_unreadable_images(world, tmp_path):
    w = world
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    paths = list(w["cand_paths"])
    paths[2] = str(bad)
    gal_paths = list(w["gal_paths"])
    gal_paths[0] = str(tmp_path / "missing.png")  # candidate 0 is planted on img00
    g = make_gallery(w["gal_ids"], w["gal_img"], gal_paths, text_emb=w["gal_text"])
    cfg = RetrievalConfig(ssim_size=SIZE, k_semantic=12, k_visual=12, batch_size=3)
    cache = RefStatsCache(g.paths, SIZE)
    out = list(retrieve_stream(g, [batch_of(w, rainy_paths=paths)], cfg, cache))
    assert len(out) == 3  # re-cut to batch_size
    rows = [r for rs, _ in out for r in rs]
    rejects = [r for _, rj in out for r in rj]
    by_id = {r["item_id"]: r for r in rejects}
    assert by_id["pair2"]["reason"] == "unreadable" and by_id["pair2"]["path"] == str(bad)
    assert by_id["img00"]["reason"] == "unreadable" and "gallery image" in by_id["img00"]["detail"]
    assert sum(r["item_id"] == "img00" for r in rejects) == 1  # reported once, not per candidate
    assert rows[0]["pair_id"] == "pair0" and rows[0]["ref_id"] != "img00"
    assert "img00" in rows[0]["visual_ids"]  # the audit lists still show what levels 1-2 kept
    assert [r["ref_id"] for r in rows[1:]] == [w["gal_ids"][p] for j, p in enumerate(w["planted"]) if j not in (0, 2)]
    assert cache.hits > 0  # gallery statistics were reused across candidates


def test_no_readable_reference_is_a_reject(world, tmp_path):
    w = world
    g = make_gallery(w["gal_ids"][:2], w["gal_img"][:2], [str(tmp_path / "a.png"), str(tmp_path / "b.png")],
                     text_emb=w["gal_text"][:2])
    rows, rejects = run(g, batch_of(w, 1))
    assert rows == []
    assert sorted((r["item_id"], r["reason"]) for r in rejects) == [("img00", "unreadable"), ("img01", "unreadable"),
                                                                   ("pair0", "no_reference")]


def test_ref_stats_cache_is_bounded(world):
    one = RefStatsCache(world["gal_paths"], SIZE).get(0).nbytes
    cache = RefStatsCache(world["gal_paths"], SIZE, max_bytes=3 * one)
    for r in range(12):
        assert cache.get(r) is not None
    assert len(cache) == 3
    assert cache.get(11) is not None and cache.hits == 1  # most recent kept
    assert cache.get(0) is not None and cache.misses == 13  # oldest evicted


def test_ref_stats_cache_shared_by_threads(world):
    from concurrent.futures import ThreadPoolExecutor

    cache = RefStatsCache(world["gal_paths"] + ["/nonexistent.png"], SIZE)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(cache.get, [r % 13 for r in range(52)]))
    assert all(g is not None for i, g in enumerate(got) if i % 13 != 12)
    assert all(got[i] is None for i in range(12, 52, 13))
    assert len(cache) == 12 and [f[0] for f in cache.new_failures()] == [12] and cache.new_failures() == []


def test_stream_blocks_and_batches_do_not_change_the_result(world):
    g = gallery_of(world)
    cfg = RetrievalConfig(ssim_size=SIZE, k_semantic=5, k_visual=3, batch_size=2)
    text = world["cand_text"].copy()
    text[5] = np.nan
    whole = batch_of(world, text_emb=text)
    want_rows, want_rej = retrieve_batch(g, whole, cfg, RefStatsCache(g.paths, SIZE))
    parts = [CandidateBatch(*(x[s:s + 3] for x in whole)) for s in range(0, 8, 3)]
    out = list(retrieve_stream(g, parts, cfg, search_block=4))
    assert [r for rows, _ in out for r in rows] == want_rows
    assert [r for _, rej in out for r in rej] == want_rej == [
        {"item_id": "pair5", "stage": "retrieve", "reason": "bad_embedding", "detail": "NaN or infinite text embedding",
         "source": None, "path": world["cand_paths"][5]}]
    assert max(len(rows) for rows, _ in out) <= 2
    # a block with no usable candidate still reports its rejects
    bad = batch_of(world, 2, text_emb=np.full((8, D), np.nan, np.float32))
    assert [(len(r), [x["reason"] for x in j]) for r, j in retrieve_stream(g, [bad], cfg)] == [(0, ["bad_embedding"] * 2)]


def test_empty_batch_gives_nothing(world):
    assert run(gallery_of(world), CandidateBatch([], [], [], [])) == ([], [])
