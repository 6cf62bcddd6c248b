"""Decode once for model-free screening (tasks/sanity/view_cache.py): leak_check keeps the sanity views
of the images it decodes, the sanity stage reads them. A cache hit gives exactly the views (and so the
scores) of decoding again; a missing, damaged or stale hand-off is decoded, never a failure."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_manifests import read_manifest
from tasks.imageio import load_reduced
from tasks.sanity.checks import CHECKS, ORDER
from tasks.sanity.view_cache import VIEWS_KEY, ViewReader, ViewWriter, clean_views, shard_path
from tasks.sanity.views import DRAFT_SIDE, View, load_view, reduce_image

SIZE = (128, 128)
SCORES = [CHECKS.get(n).column for n in ORDER]


def same_view(a: View, b: View) -> bool:
    return (a.size == b.size and a.scale == b.scale
            and all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("mid", "small", "tiny")))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """A PNG, a big JPEG (decoded at 1/8 scale), a portrait JPEG with EXIF rotation, a non-integer shrink."""
    root = tmp_path_factory.mktemp("views")
    rng = np.random.default_rng(5)
    paths = []
    for name, shape in (("a.png", (512, 512)), ("b.jpg", (2400, 3000)), ("c.jpg", (300, 400)), ("d.png", (333, 517))):
        img = Image.fromarray((rng.random((*shape, 3)) * 255).astype(np.uint8))
        exif = Image.Exif()
        if name == "c.jpg":
            exif[0x0112] = 6  # rotate 90: displayed portrait
        img.save(root / name, exif=exif) if name.endswith(".jpg") else img.save(root / name)
        paths.append(root / name)
    return paths


def write_views(path: Path, images: list[Path]) -> None:
    with ViewWriter(path) as w:
        for p in images:
            img, size = load_reduced(p, DRAFT_SIDE)
            w.add(p.name, reduce_image(img), size)


def test_views_read_back_equal_decoding_again(images, tmp_path):
    write_views(tmp_path / "s.views", images)
    with ViewReader(tmp_path / "s.views") as r:
        for p in images:
            assert same_view(r.get(p.name), load_view(p)), p.name
        assert r.get("other") is None
        assert (r.hits, r.misses) == (len(images), 1)
    assert load_view(images[2]).size == (300, 400)  # EXIF orientation applied, as when decoding


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "flipped_pixel", "missing"])
def test_a_damaged_file_or_entry_reads_as_absent(images, tmp_path, damage):
    path = tmp_path / "s.views"
    write_views(path, images)
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not views at all" * 100)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "flipped_pixel":
        data[100] ^= 0xFF  # inside the first entry's pixels
        path.write_bytes(bytes(data))
    else:
        path.unlink()
    with ViewReader(path) as r:
        got = [r.get(p.name) for p in images]
    if damage == "flipped_pixel":
        assert got[0] is None and all(same_view(g, load_view(p)) for g, p in zip(got[1:], images[1:]))
    else:
        assert got == [None] * len(images)


def test_a_failed_write_leaves_no_file(images, tmp_path):
    with pytest.raises(RuntimeError):
        with ViewWriter(tmp_path / "s.views") as w:
            w.add("x", np.zeros((4, 4, 3), np.uint8), (4, 4))
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


# --- through the stages ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from tasks.offline.synth import synthesize_paired
    from tasks.offline.synth.writer import write_png
    from tasks.sanity.planted import DAMAGES

    root = tmp_path_factory.mktemp("view_cache_run")
    items = synthesize_paired(root / "good", per_type=2, seed=41, size=SIZE)
    load = lambda p: np.asarray(Image.open(p).convert("RGB"), np.float32) / 255.0  # noqa: E731
    for n, (kind, damages) in enumerate(DAMAGES.items()):
        rainy, target = load(items[n].input_path), load(items[n].target_path)
        r, t = damages[-1][1](rainy, target, load(items[n + 1].target_path))
        write_png(root / "bad" / "drs" / "input" / f"{kind}.png", r)
        write_png(root / "bad" / "drs" / "target" / f"{kind}.png", t)
    synthesize_paired(root / "tests", per_type=1, seed=42, size=SIZE)  # a test set that nothing copies
    return root


def run_screening(run_dir: Path, source: Path, test_sets=True, before_sanity=None, **sanity):
    from tasks.config import RunConfig
    from tasks.stage import make_stage, prepare_run, run_stage

    cfg = RunConfig(sources=[f"unirain={source / 'good'}", f"unirain.bad={source / 'bad'}"],
                    ingest={"num_shards": 2, "min_side": 32}, sanity=sanity,
                    leak_check={"test_sets": [f"unirain.bench={source / 'tests'}"] if test_sets else []})
    run, n = prepare_run(run_dir, cfg)
    leak = [run_stage(make_stage(name, cfg, n), run) for name in ("ingest", "leak_check")][-1]
    if before_sanity:
        before_sanity(run)
    return run, leak, run_stage(make_stage("sanity", cfg, n), run)


def scores(run) -> pd.DataFrame:
    return read_manifest(run.manifest("sanity"), "sanity").sort_values("pair_id").reset_index(drop=True)


def sanity_rejects(run) -> pd.DataFrame:
    rejects = read_manifest(run.rejects, "rejects")
    return rejects[rejects["stage"] == "sanity"].sort_values("item_id")[["item_id", "reason", "detail"]]


def test_sanity_reads_leak_checks_views_with_the_same_result_as_decoding(source, tmp_path):
    decoded, _, plain = run_screening(tmp_path / "decoded", source, test_sets=False)
    run, leak, report = run_screening(tmp_path / "handed", source)
    n = len(read_manifest(run.manifest("candidates"), "candidates"))
    assert leak.totals["test_leaks"] == 0
    assert plain.totals["views_cached"] == 0 and plain.totals["views_decoded"] == 2 * n
    assert report.totals["views_cached"] == 2 * n and report.totals["views_decoded"] == 0
    pd.testing.assert_frame_equal(scores(run), scores(decoded))
    pd.testing.assert_frame_equal(sanity_rejects(run).reset_index(drop=True), sanity_rejects(decoded).reset_index(drop=True))
    assert len(set(sanity_rejects(run)["reason"])) >= 3  # the comparison covers rejected pairs too
    assert not list((run.cache / "views" / VIEWS_KEY).glob("shard-*"))  # a hand-off: read once, then gone
    # a later sanity redo (new threshold) decodes, as without any hand-off
    _, _, again = run_screening(tmp_path / "handed", source, misaligned={"threshold": 50})
    assert again.redone == 2 and again.totals["views_decoded"] == 2 * n and again.totals["views_cached"] == 0


def test_a_damaged_or_stale_hand_off_is_decoded(source, tmp_path):
    decoded, _, _ = run_screening(tmp_path / "decoded", source, test_sets=False)

    def damage(run):
        files = sorted((run.cache / "views" / VIEWS_KEY).glob("shard-*"))
        assert len(files) == 2
        files[0].write_bytes(files[0].read_bytes()[:-40])  # truncated: its shard decodes everything
        data = bytearray(files[1].read_bytes())
        for offset, *_ in ViewReader(files[1]).index.values():
            data[offset + 7] ^= 0x5A  # every entry's pixels changed: its checksum fails
        files[1].write_bytes(bytes(data))

    run, _, report = run_screening(tmp_path / "damaged", source, before_sanity=damage)
    assert report.totals["views_cached"] == 0 and report.totals["views_decoded"] > 0
    pd.testing.assert_frame_equal(scores(run), scores(decoded))


def test_views_are_not_kept_for_a_file_changed_since_ingest(source, tmp_path):
    from tasks.config import RunConfig
    from tasks.offline.synth.writer import write_png
    from tasks.stage import make_stage, prepare_run, run_stage

    import shutil

    src = tmp_path / "src"
    shutil.copytree(source / "good", src)
    cfg = RunConfig(sources=[f"unirain={src}"], ingest={"num_shards": 1, "min_side": 32},
                    leak_check={"test_sets": [f"unirain.bench={source / 'tests'}"]})
    run, n = prepare_run(tmp_path / "run", cfg)
    run_stage(make_stage("ingest", cfg, n), run)
    changed = sorted(src.rglob("target/*.png"))[0]
    write_png(changed, np.zeros((*SIZE, 3), np.float32))  # after ingest hashed it
    run_stage(make_stage("leak_check", cfg, n), run)
    cands = read_manifest(run.manifest("candidates"), "candidates")
    stale = cands.loc[cands["clean_path"] == changed.relative_to(src).as_posix(), "clean_id"]
    assert len(stale) == 1
    with ViewReader(shard_path(run, 0)) as r:
        assert set(r.index) == (set(cands["rainy_id"]) | set(cands["clean_id"])) - set(stale)


def test_no_views_are_kept_when_no_sanity_check_is_on_and_old_or_partial_files_are_dropped(source, tmp_path):
    off = {n: {"enabled": False} for n in ORDER}
    kept = []
    run, _, _ = run_screening(tmp_path / "run", source, before_sanity=lambda r: kept.extend(r.cache.rglob("shard-*")),
                              **off)
    assert kept == []
    old = run.cache / "views" / "v0-old"
    old.mkdir(parents=True)
    (old / "shard-00000.views").write_bytes(b"x")
    crashed = shard_path(run, 0).with_name("shard-00000.views.tmp-1234abcd")
    crashed.parent.mkdir(parents=True, exist_ok=True)
    crashed.write_bytes(b"half")
    clean_views(run)
    assert not old.exists() and not crashed.exists() and crashed.parent.exists()
