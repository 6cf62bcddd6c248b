"""The test-set leak check: perceptual hashes that survive resizing, JPEG and small crops, flag no
unrelated photo, and the `leak_check` stage (rejects naming the test image, funnel, fingerprint)."""
from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_manifests import RunLayout, read_manifest
from tasks.leak.check import is_near_duplicate, nearest
from tasks.leak.phash import CROP_BOXES, Hashes, hash_variants
from tasks.leak.test_sets import LeakIndex
from tasks.offline.synth.clean_photos import BUILTIN_PHOTOS, builtin_photo

TEST_PHOTOS = ("astronaut", "chelsea", "coffee", "grace_hopper")
TRAIN_PHOTOS = ("rocket", "china", "flower", "motorcycle_left")


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def crop(img: Image.Image, left=0.0, top=0.0, right=0.0, bottom=0.0) -> Image.Image:
    w, h = img.size
    return img.crop((round(left * w), round(top * h), w - round(right * w), h - round(bottom * h)))


TRANSFORMS = {
    "identical": lambda im: im,
    "half size": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.BILINEAR),
    "upscaled 1.5x": lambda im: im.resize((im.width * 3 // 2, im.height * 3 // 2), Image.Resampling.BICUBIC),
    "JPEG q=40": lambda im: jpeg(im, 40),
    "crop 5% each side": lambda im: crop(im, .05, .05, .05, .05),
    "crop 8% left and top": lambda im: crop(im, .08, .08),
    "crop 10% right": lambda im: crop(im, right=.10),
    "crop 3/7/2/6% + resize + JPEG q=60": lambda im: jpeg(crop(im, .03, .07, .02, .06).resize((300, 220)), 60),
    "zoomed-in part: 10/10/15/10% off": lambda im: crop(im, .10, .10, .15, .10),
    "zoomed-in centre: 16% off each side + JPEG q=70": lambda im: jpeg(crop(im, .16, .16, .16, .16), 70),
}


def index_of(images: dict[str, Image.Image]) -> LeakIndex:
    parts = [hash_variants(img.convert("L").resize((128, 128 * img.height // img.width)), CROP_BOXES)
             for img in images.values()]
    owner = np.repeat(np.arange(len(parts), dtype=np.int32), len(CROP_BOXES))
    return LeakIndex(list(images), Hashes.concat(parts), owner, [])


def query(img: Image.Image) -> Hashes:
    grey = img.convert("L")
    grey.thumbnail((128, 128))
    return hash_variants(grey)


@pytest.fixture(scope="module")
def photos():
    return {name: builtin_photo(name) for name in BUILTIN_PHOTOS}


@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_a_transformed_copy_of_a_test_image_is_found(photos, transform):
    index = index_of({n: photos[n] for n in TEST_PHOTOS})
    for k, name in enumerate(TEST_PHOTOS):
        found = nearest(query(TRANSFORMS[transform](photos[name])), index, 12)
        assert is_near_duplicate(found, 0.85).all(), (name, found)
        assert found.test[0] == k  # the right test image


def test_unrelated_photos_and_other_crops_are_not_flagged(photos):
    index = index_of({n: photos[n] for n in TEST_PHOTOS})
    others = [photos[n] for n in BUILTIN_PHOTOS if n not in TEST_PHOTOS]
    # the other photos, transformed as a copy would be, and distant parts of the test photos themselves
    queries = [t(im) for im, t in itertools.product(others, TRANSFORMS.values())]
    queries += [crop(photos[n], right=.5) for n in TEST_PHOTOS] + [crop(photos[n], top=.5) for n in TEST_PHOTOS]
    found = nearest(Hashes.concat([query(q) for q in queries]), index, 12)
    assert not is_near_duplicate(found, 0.85).any(), found.correlation
    assert found.min_distance.min() > 12
    # each test alone separates them here: with every hash let through, the correlation still refuses
    everything = nearest(Hashes.concat([query(q) for q in queries]), index, 64)
    assert np.nanmax(everything.correlation) < 0.8


def test_nearest_on_an_empty_index_finds_nothing(photos):
    empty = LeakIndex([], Hashes.concat([]), np.zeros(0, np.int32), [])
    found = nearest(query(photos["rocket"]), empty, 12)
    assert found.test.tolist() == [-1] and found.min_distance.tolist() == [64]


# --- the stage -----------------------------------------------------------------------------------

def write_photos(folder: Path, names) -> Path:
    folder.mkdir(parents=True)
    for name in names:
        builtin_photo(name).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    """A training source from some photos, a test set from others, and three planted leaks."""
    from tasks.offline.synth import synthesize_paired

    root = tmp_path_factory.mktemp("leak")
    size = (112, 96)
    synthesize_paired(root / "train", per_type=2, seed=3, size=size,
                      clean_dir=write_photos(root / "train_photos", TRAIN_PHOTOS))
    synthesize_paired(root / "tests", per_type=1, seed=4, size=(160, 128),
                      clean_dir=write_photos(root / "test_photos", TEST_PHOTOS))
    test_rainy = sorted((root / "tests" / "drs" / "input").iterdir()) + sorted((root / "tests" / "nrd" / "input").iterdir())
    test_clean = sorted((root / "tests" / "drs" / "target").iterdir()) + sorted((root / "tests" / "nrd" / "target").iterdir())
    leaks = root / "leaks" / "drs"
    (leaks / "input").mkdir(parents=True)
    (leaks / "target").mkdir(parents=True)
    own_clean = Image.open(next((root / "train" / "drs" / "target").iterdir())).convert("RGB")

    def plant(name, rainy, clean):
        rainy.save(leaks / "input" / name)
        clean.resize(rainy.size).save(leaks / "target" / name)

    # the clean image re-encoded at another size; a cropped pair; the rainy image only (clean: its own)
    a, b = Image.open(test_clean[0]).convert("RGB"), Image.open(test_rainy[0]).convert("RGB")
    plant("resized.jpg", jpeg(b.resize((120, 96)), 70), jpeg(a.resize((120, 96)), 70))
    a, b = Image.open(test_clean[1]).convert("RGB"), Image.open(test_rainy[1]).convert("RGB")
    plant("cropped.png", crop(b, .06, .04, .05, .07), crop(a, .06, .04, .05, .07))
    b = Image.open(test_rainy[1]).convert("RGB")
    plant("rainy_only.png", jpeg(crop(b, right=.08), 80), own_clean)
    return root


def run_leak(run_dir: Path, pools: Path, test_sets: list[str], models=None, **leak):
    from tasks.config import RunConfig
    from tasks.stage import make_stage, prepare_run, run_stage

    cfg = RunConfig(sources=[f"unirain={pools / 'train'}", f"unirain.more={pools / 'leaks'}"],
                    gallery=[str(pools / "train_photos")], ingest={"num_shards": 2, "min_side": 32},
                    leak_check={"test_sets": test_sets, **leak}, models=models or {})
    run, n = prepare_run(run_dir, cfg)
    run_stage(make_stage("ingest", cfg, n), run)
    return run, run_stage(make_stage("leak_check", cfg, n), run)


def leak_rejects(run: RunLayout) -> pd.DataFrame:
    rejects = read_manifest(run.rejects, "rejects")
    return rejects[rejects["stage"] == "leak_check"]


def test_stage_rejects_the_planted_leaks_only_and_names_the_test_image(pools, tmp_path):
    from tasks.funnel import funnel_table
    from tasks.screen import live_candidates

    run, report = run_leak(tmp_path / "run", pools, [f"unirain.bench={pools / 'tests'}"])
    rejects = leak_rejects(run)
    cands = read_manifest(run.manifest("candidates"), "candidates")
    leaked = set(cands.loc[cands["source"] == "unirain.more", "pair_id"])
    assert len(leaked) == 3 and set(rejects["item_id"]) == leaked and set(rejects["reason"]) == {"test_leak"}
    assert report.totals["test_leaks"] == 3
    assert rejects["detail"].str.contains(r"test image unirain\.bench:(?:drs|nrd)/(?:input|target)/").all(), rejects["detail"]
    assert rejects["detail"].str.startswith("rainy image").sum() >= 1  # the pair whose rainy image only is a copy
    rows = read_manifest(run.manifest("leak_check"), "leak_check")
    assert len(rows) == len(cands) and rows["test_leak"].sum() == 3
    clean_rows = rows[~rows["test_leak"]]
    assert (clean_rows["test_correlation"].fillna(0) < 0.85).all()
    # later stages see only the pairs that passed; the funnel shows the check per source
    assert set(live_candidates(run, "caption")["pair_id"]) == set(cands["pair_id"]) - leaked
    funnel = funnel_table(run)
    row = funnel[(funnel["stage"] == "leak_check") & (funnel["source"] == "unirain.more")].iloc[0]
    assert row["kept"] == 0 and row["rejected"] == 3 and row["reasons"] == "test_leak: 3"
    row = funnel[(funnel["stage"] == "leak_check") & (funnel["source"] == "unirain")].iloc[0]
    assert row["kept"] == 8 and row["rejected"] == 0


def test_changing_the_test_sets_redoes_the_check_and_none_passes_everything(pools, tmp_path):
    run, _ = run_leak(tmp_path / "run", pools, [f"unirain.bench={pools / 'tests'}"])
    _, again = run_leak(tmp_path / "run", pools, [f"unirain.bench={pools / 'tests'}"])
    assert again.redone == 0
    _, none = run_leak(tmp_path / "run", pools, [])
    assert none.redone == 2 and "leak_check.test_sets" in none.why
    assert len(leak_rejects(run)) == 0
    assert not read_manifest(run.manifest("leak_check"), "leak_check")["test_leak"].any()
    # a touched test image redoes it too (its size and mtime are in the fingerprint)
    run_leak(tmp_path / "run", pools, [f"unirain.bench={pools / 'tests'}"])
    touched = next((pools / "tests" / "drd" / "target").iterdir())
    import os
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    _, redo = run_leak(tmp_path / "run", pools, [f"unirain.bench={pools / 'tests'}"])
    assert redo.redone == 2 and "leak_check.listing" in redo.why
    assert len(leak_rejects(run)) == 3


def test_a_bad_test_set_fails_naming_it(pools, tmp_path):
    with pytest.raises(ValueError, match="nosuch"):
        run_leak(tmp_path / "run", pools, [f"unirain={pools / 'nosuch'}"])
    with pytest.raises(Exception, match="unknown_adapter|dataset adapter"):
        run_leak(tmp_path / "run2", pools, [f"unknown_adapter={pools / 'tests'}"])


def test_clip_confirms_hash_matches_when_an_embedder_is_configured(pools, tmp_path, tiny_models, one_torch_thread):
    models = {"embedder": tiny_models.embedder}
    run, report = run_leak(tmp_path / "run", pools, [f"unirain.bench={pools / 'tests'}"], models=models)
    rows = read_manifest(run.manifest("leak_check"), "leak_check")
    leaks = rows[rows["test_leak"]]
    assert len(leaks) == 3 and leaks["clip_cos"].between(0.8, 1.0001).all()
    assert rows.loc[~rows["test_leak"], "clip_cos"].isna().all()  # CLIP runs on hash matches only
    assert leak_rejects(run)["detail"].str.contains("CLIP cosine").all()
    # a cosine only exact copies reach: the other hash matches are vetoed, and the fingerprint says why it was redone
    _, strict = run_leak(tmp_path / "run", pools, [f"unirain.bench={pools / 'tests'}"], models=models, clip_min_cos=1.0)
    assert strict.redone == 2 and "leak_check.clip_min_cos" in strict.why
    rows = read_manifest(run.manifest("leak_check"), "leak_check")
    vetoed = rows[rows["clip_cos"].notna() & ~rows["test_leak"]]
    assert len(vetoed) >= 1 and (vetoed["clip_cos"] < 1.0).all()
    assert len(leak_rejects(run)) == 3 - len(vetoed)
    # the tiny random CLIP cannot tell photos apart (unrelated photos reach 0.99): in the demo it confirms
    # whatever the hashes found; a real CLIP is what makes this a second opinion (docs/leak_check.md)


def test_a_redone_leak_check_makes_caption_stale():
    """Caption's fingerprint holds the generation of every stage before it, whatever the screening
    stages' own upstreams are, so new test sets redo caption and everything after it."""
    from tasks.caption.stage import CaptionStage
    from tasks.pipeline import STAGE_ORDER

    assert set(CaptionStage.upstream) == set(STAGE_ORDER[:STAGE_ORDER.index("caption")]) >= {"ingest", "leak_check"}
