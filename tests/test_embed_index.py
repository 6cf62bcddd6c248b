"""Embeddings from the tiny open_clip model, image batches from files with bad files among them,
and FAISS indexes: exact results, save/load, refusal of another model's index, k > ntotal."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tasks.config import IndexConfig
from tasks.embed.faiss_index import IndexMismatch, build_index, load_index, save_index, search, sidecar_path
from tasks.image_batches import Failure, iter_batches


@pytest.fixture(scope="module")
def image_rows(tmp_path_factory):
    """Five good files and four bad ones: (item_id, path, expected failure reason or None)."""
    from skimage import data

    d = tmp_path_factory.mktemp("images")
    rows = []
    for i, name in enumerate(["astronaut", "coffee", "chelsea", "rocket", "camera"]):
        path = d / f"{name}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(getattr(data, name)()).save(path)  # camera is grayscale: converted, not rejected
        rows.append((f"good{i}", str(path), None))
    full = (d / "astronaut.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (d / "empty.png").write_bytes(b"")
    (d / "text.jpg").write_text("not an image")
    rows.insert(1, ("trunc", str(d / "truncated.jpg"), "unreadable"))
    rows.insert(3, ("empty", str(d / "empty.png"), "unreadable"))
    rows.append(("text", str(d / "text.jpg"), "unreadable"))
    rows.append(("missing", str(d / "missing.png"), "unreadable"))
    return rows


def test_embeddings_finite_normalised_deterministic(tiny_embedder, image_rows):
    good = [(i, p) for i, p, bad in image_rows if bad is None]
    batch = next(iter_batches(good, tiny_embedder.preprocess, batch_size=8, num_workers=0))
    img = tiny_embedder.encode_images(batch.tensor)
    assert img.dtype == np.float32 and img.shape == (5, tiny_embedder.dim)
    assert np.isfinite(img).all()
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    assert np.abs(img[0] - img[1]).max() > 1e-3  # different images, different vectors

    texts = ["heavy rain on a night street", "raindrops on a car window", "heavy rain on a night street"]
    txt = tiny_embedder.encode_texts(texts)
    assert txt.dtype == np.float32 and txt.shape == (3, tiny_embedder.dim)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(txt[0], txt[2], atol=1e-6)
    assert np.abs(txt[0] - txt[1]).max() > 1e-3
    # batching does not change a text's embedding
    np.testing.assert_allclose(tiny_embedder.encode_texts(texts[1:2])[0], txt[1], atol=1e-5)
    assert tiny_embedder.encode_texts([]).shape == (0, tiny_embedder.dim)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_bad_files_become_failures_in_order(tiny_embedder, image_rows, num_workers):
    rows = [(i, p) for i, p, _ in image_rows]
    batches = list(iter_batches(rows, tiny_embedder.preprocess, batch_size=2, num_workers=num_workers))
    ids = [i for b in batches for i in b.ids]
    failures = [f for b in batches for f in b.failures]
    assert ids == [i for i, _, bad in image_rows if bad is None]  # row order kept
    assert {f.item_id: f.reason for f in failures} == {i: bad for i, _, bad in image_rows if bad}
    assert all(isinstance(f, Failure) and f.detail for f in failures)
    for b in batches:
        assert (b.tensor is None) == (not b.ids)
        if b.tensor is not None:
            assert tuple(b.tensor.shape) == (len(b.ids), 3, 224, 224)
    # the last batch ("missing" alone) failed entirely: no tensor, no exception
    assert batches[-1].ids == [] and batches[-1].tensor is None


def test_preprocess_errors_are_failures(image_rows):
    def boom(_image):
        raise ValueError("bad transform")

    (batch,) = iter_batches([image_rows[0][:2]], boom, batch_size=4, num_workers=0)
    assert batch.ids == [] and batch.failures[0].reason == "preprocess_error"
    assert list(iter_batches([], boom, batch_size=4)) == []


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_search_matches_brute_force():
    rng = np.random.default_rng(0)
    gallery, queries = _unit(rng, 200, 32), _unit(rng, 7, 32)
    ids = [f"g{i}" for i in range(200)]
    l2 = build_index(gallery, ids, metric="l2", model_id="m", normalised=True)
    ip = build_index(gallery, ids, metric="ip", model_id="m", normalised=True)
    res_l2, res_ip = search(l2, queries, 5), search(ip, queries, 5)
    dist = np.linalg.norm(queries[:, None] - gallery[None], axis=2)
    cos = queries @ gallery.T
    for q in range(7):
        best = np.argsort(dist[q])[:5]
        assert res_l2.ids[q] == [ids[i] for i in best]
        np.testing.assert_allclose(res_l2.scores[q], dist[q, best], atol=1e-4)
        best_ip = np.argsort(-cos[q])[:5]
        assert res_ip.ids[q] == [ids[i] for i in best_ip]
        np.testing.assert_allclose(res_ip.scores[q], cos[q, best_ip], atol=1e-5)
    # on unit vectors text L2 ranks as cosine does
    assert res_l2.ids == res_ip.ids


def test_k_larger_than_ntotal_returns_only_real_hits():
    rng = np.random.default_rng(1)
    idx = build_index(_unit(rng, 3, 8), ["a", "b", "c"], metric="l2", model_id="m", normalised=True)
    res = search(idx, _unit(rng, 2, 8), k=50)
    assert res.rows.shape == (2, 3) and res.valid.all() and (res.rows >= 0).all()
    assert all(sorted(hits) == ["a", "b", "c"] for hits in res.ids)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_kinds(kind, tmp_path):
    rng = np.random.default_rng(2)
    gallery = _unit(rng, 400, 16)
    ids = [f"g{i}" for i in range(400)]
    idx = build_index(gallery, ids, metric="ip", model_id="m", normalised=True,
                      cfg=IndexConfig(kind=kind, nlist=64, nprobe=64))
    if kind == "ivf":
        assert idx.meta.params["nlist"] == 400 // 39  # too few points for 64 lists
    queries = gallery[:5]
    res = search(idx, queries, 10)
    for q in range(5):
        assert res.ids[q][0] == ids[q]  # every vector finds itself first
        assert "-1" not in res.ids[q] and len(res.ids[q]) == int(res.valid[q].sum())
    loaded = load_index(save_index(idx, tmp_path / f"{kind}.faiss"), "m", 16)
    again = search(loaded, queries, 10)
    assert again.ids == res.ids


def test_ivf_with_few_probes_never_returns_minus_one():
    rng = np.random.default_rng(3)
    gallery = _unit(rng, 39 * 8, 8)
    idx = build_index(gallery, [str(i) for i in range(len(gallery))], metric="l2", model_id="m",
                      normalised=True, cfg=IndexConfig(kind="ivf", nlist=8, nprobe=1))
    res = search(idx, _unit(rng, 20, 8), k=len(gallery))  # one list cannot hold every vector
    assert not res.valid.all()
    for q, hits in enumerate(res.ids):
        assert len(hits) == res.valid[q].sum() and len(hits) > 0
        assert np.isfinite(res.hit_scores(q)).all()
    assert (res.rows[~res.valid] == -1).all()


def test_save_load_round_trip_and_sidecar(tmp_path, tiny_embedder):
    texts = ["rain at night", "a wet street", "drops on glass", "a car in the rain"]
    vecs = tiny_embedder.encode_texts(texts)
    ids = [f"img{i}" for i in range(4)]
    idx = build_index(vecs, ids, metric="l2", model_id=tiny_embedder.model_id, normalised=tiny_embedder.normalised)
    path = save_index(idx, tmp_path / "indexes" / "gallery_text.faiss")
    side = json.loads(sidecar_path(path).read_text())
    assert side["ids"] == ids and side["metric"] == "l2" and side["kind"] == "flat"
    assert side["normalised"] is True and side["dim"] == tiny_embedder.dim
    assert side["model_id"] == tiny_embedder.model_id
    assert not list(path.parent.glob("*.tmp*"))

    loaded = load_index(path, expect_model_id=tiny_embedder.model_id, expect_dim=tiny_embedder.dim)
    assert loaded.ids == ids and loaded.meta == idx.meta
    q = tiny_embedder.encode_texts(["rain at night"])
    assert search(loaded, q, 2).ids == search(idx, q, 2).ids
    assert search(loaded, q, 1).ids == [["img0"]]


def test_other_model_or_dim_is_refused(tmp_path):
    rng = np.random.default_rng(4)
    idx = build_index(_unit(rng, 10, 16), [str(i) for i in range(10)], metric="ip",
                      model_id="open_clip:ViT-L-14:openai", normalised=True)
    path = save_index(idx, tmp_path / "gallery_image.faiss")
    with pytest.raises(IndexMismatch) as exc:
        load_index(path, expect_model_id="open_clip:local-dir:clip@0123456789ab", expect_dim=64)
    msg = str(exc.value)
    for part in ("open_clip:ViT-L-14:openai", "open_clip:local-dir:clip@0123456789ab", "16", "64", str(path)):
        assert part in msg
    with pytest.raises(IndexMismatch, match="dimension 8"):
        search(idx, _unit(rng, 1, 8), 3)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_index(tmp_path / "absent.faiss")


def test_bad_vectors_refused():
    good = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="NaN"):
        build_index(np.array([[0, np.nan, 0, 0], [1, 0, 0, 0]], np.float32), ["a", "b"], metric="l2",
                    model_id="m", normalised=False)
    with pytest.raises(ValueError, match="empty gallery"):
        build_index(np.zeros((0, 4), np.float32), [], metric="l2", model_id="m", normalised=False)
    with pytest.raises(ValueError, match="unique"):
        build_index(good, ["a", "a"], metric="l2", model_id="m", normalised=False)
    from tasks.embed.backends import nonfinite_rows

    assert nonfinite_rows(np.array([[0, np.inf], [1, 2]], np.float32)).tolist() == [True, False]
