"""Each dataset adapter on a small tree in its public layout: pairs, order, types, missing twins,
many rainy per clean, and the errors for an unknown adapter or a folder in no known layout.

Listing never reads the files, so most trees hold empty placeholders; one test writes real images
and runs them through ingest's probing to see a missing twin become a `missing_clean` reject.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.ingest.adapters import ADAPTERS, get_adapter
from tasks.ingest.stage import list_source
from tasks.ingest.sources import SourceSpec


def make(root: Path, *paths: str) -> None:
    for rel in paths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def relative(listings, root: Path) -> list[tuple[str, str | None, str | None]]:
    rel = lambda p: p.relative_to(root).as_posix() if p is not None else None  # noqa: E731
    return [(rel(p.rainy_path), rel(p.clean_path), p.rain_type) for p in listings]


def listed(name: str, root: Path, rain_type: str | None = None) -> list[tuple[str, str | None, str | None]]:
    """What ingest lists for `--source name[:rain_type]=root`, paths relative to root."""
    return relative(list_source(SourceSpec(name, name, rain_type, root)), root)


def test_every_issue_adapter_is_registered():
    expected = {"unirain", "paired", "rain13k", "rain100l", "rain100h", "test100", "test1200", "test2800", "rain200l",
                "rain200h", "rain1400", "spa", "raindrop", "rainds", "gtrain", "gtav_nightrain", "realrain1k"}
    assert expected <= set(ADAPTERS)


def test_unknown_adapter_names_it():
    with pytest.raises(ValueError, match="'rain9000'.*known:.*rain13k"):
        get_adapter("rain9000")


# ---- the project's own layouts -------------------------------------------------------------------

UNIRAIN_TREE = ("drs/input/a.png", "drs/target/a.png", "nrd/input/b.png", "nrd/target/b.png", "nrd/input/c.png")
UNIRAIN_PAIRS = [
    ("drs/input/a.png", "drs/target/a.png", "day_streak"),
    ("nrd/input/b.png", "nrd/target/b.png", "night_drop"),
    ("nrd/input/c.png", None, "night_drop"),
]


def test_unirain_pairs_by_name_and_types_by_folder(tmp_path):
    make(tmp_path, *UNIRAIN_TREE)
    assert relative(get_adapter("unirain").list_pairs(tmp_path), tmp_path) == UNIRAIN_PAIRS
    assert {t for _, _, t in relative(get_adapter("unirain").list_pairs(tmp_path, "day_drop"), tmp_path)} == {"day_drop"}


def test_unirain_root_one_level_too_deep_says_so(tmp_path):
    make(tmp_path, "drs/input/a.png", "drs/target/a.png")
    with pytest.raises(ValueError, match=r"no dataset layout found; expected drs\|drd\|nrs\|nrd/\{input,target\}/NAME; "
                                         r".*drs holds input/ itself: give its parent, or use paired:TYPE="):
        list(get_adapter("unirain").list_pairs(tmp_path / "drs"))
    with pytest.raises(ValueError, match="no dataset layout found"):
        list(get_adapter("unirain").list_pairs(tmp_path / "drs" / "input"))


def test_unirain_folder_types_survive_ingest_listing(tmp_path):
    make(tmp_path, *UNIRAIN_TREE)
    assert listed("unirain", tmp_path) == UNIRAIN_PAIRS


def test_paired_strips_affixes_and_takes_the_source_type(tmp_path):
    make(tmp_path, "rainy/12_rain.png", "rainy/13_rain.png", "gt/12_clean.png")
    assert listed("paired", tmp_path) == [("rainy/12_rain.png", "gt/12_clean.png", None), ("rainy/13_rain.png", None, None)]
    assert {t for _, _, t in listed("paired", tmp_path, "night_streak")} == {"night_streak"}


def test_paired_without_a_layout_names_the_folder(tmp_path):
    make(tmp_path, "photos/a.png")
    with pytest.raises(ValueError, match=str(tmp_path)):
        listed("paired", tmp_path)


# ---- Restormer-style sets ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["rain13k", "test100", "test1200", "test2800", "rain100l", "rain100h", "rain200l", "rain200h"])
def test_input_target_sets_at_set_root(tmp_path, name):
    make(tmp_path, "input/1.png", "input/2.png", "target/1.png", "target/2.png", "input/3.png")
    assert listed(name, tmp_path) == [
        ("input/1.png", "target/1.png", "day_streak"),
        ("input/2.png", "target/2.png", "day_streak"),
        ("input/3.png", None, "day_streak"),
    ]


def test_input_target_sets_through_split_folders_only(tmp_path):
    make(tmp_path, "train/input/a.jpg", "train/target/a.jpg", "test/input/b.png", "test/target/b.png",
         "extra/input/x.png", "extra/target/x.png")  # not a split folder: another dataset, left alone
    assert listed("test100", tmp_path) == [("test/input/b.png", "test/target/b.png", "day_streak"),
                                           ("train/input/a.jpg", "train/target/a.jpg", "day_streak")]


@pytest.mark.parametrize("name", ["rain13k", "rain200h", "rain1400", "gtav_nightrain", "raindrop", "rainds", "spa", "gtrain", "realrain1k"])
def test_wrong_layout_names_folder_and_layout(tmp_path, name):
    make(tmp_path, "pictures/a.png", "pictures/b.png")
    with pytest.raises(ValueError, match=rf"{tmp_path}.*expected"):
        listed(name, tmp_path)


def test_missing_root_names_it(tmp_path):
    with pytest.raises(ValueError, match="nowhere"):
        listed("rain13k", tmp_path / "nowhere")


# ---- JORDER family --------------------------------------------------------------------------------

def test_rain200_jorder_release_from_dataset_root(tmp_path):
    make(tmp_path,
         "rain_data_train_Heavy/rain/X2/norain-1x2.png", "rain_data_train_Heavy/rain/X2/norain-2x2.png",
         "rain_data_train_Heavy/norain/norain-1.png", "rain_data_train_Heavy/norain/norain-2.png",
         "rain_heavy_test/rain/X2/norain-7x2.png")
    assert listed("rain200h", tmp_path) == [
        ("rain_data_train_Heavy/rain/X2/norain-1x2.png", "rain_data_train_Heavy/norain/norain-1.png", "day_streak"),
        ("rain_data_train_Heavy/rain/X2/norain-2x2.png", "rain_data_train_Heavy/norain/norain-2.png", "day_streak"),
        ("rain_heavy_test/rain/X2/norain-7x2.png", None, "day_streak"),
    ]
    # the split folder itself is a root too
    assert listed("rain200l", tmp_path / "rain_data_train_Heavy")[0] == ("rain/X2/norain-1x2.png", "norain/norain-1.png", "day_streak")


def test_rain200_input_groundtruth_with_jorder_names(tmp_path):
    make(tmp_path, "train/input/norain-3x2.png", "train/groundtruth/norain-3.png")
    assert listed("rain200l", tmp_path) == [("train/input/norain-3x2.png", "train/groundtruth/norain-3.png", "day_streak")]


def test_rain100_jorder_e_flat_and_rainy_folder(tmp_path):
    # RainTrainH: rain-N and norain-N side by side, with rain masks that are not samples
    make(tmp_path, "RainTrainH/rain-1.png", "RainTrainH/norain-1.png", "RainTrainH/rainregion-1.png",
         "RainTrainH/rainstreak-1.png", "RainTrainH/rain-2.png")
    assert listed("rain100h", tmp_path) == [("RainTrainH/rain-1.png", "RainTrainH/norain-1.png", "day_streak"),
                                            ("RainTrainH/rain-2.png", None, "day_streak")]
    # Rain100H test as PReNet ships it: rainy/rain-N beside norain-N
    test = tmp_path / "Rain100H"
    make(test, "rainy/rain-001.png", "norain-001.png")
    assert listed("rain100h", test) == [("rainy/rain-001.png", "norain-001.png", "day_streak")]


# ---- many rainy per clean ----------------------------------------------------------------------------

def test_rain1400_fourteen_rainy_per_clean(tmp_path):
    make(tmp_path, *[f"training/rainy_image/1_{i}.jpg" for i in range(1, 15)], "training/ground_truth/1.jpg",
         "testing/rainy_image/901_3.jpg")
    pairs = listed("rain1400", tmp_path)
    assert len(pairs) == 15
    assert pairs[0] == ("testing/rainy_image/901_3.jpg", None, "day_streak")
    assert {c for _, c, _ in pairs[1:]} == {"training/ground_truth/1.jpg"}
    assert pairs == listed("rain1400", tmp_path)  # same order every time


def test_gtav_nightrain_sets_and_splits(tmp_path):
    make(tmp_path, "set1/train/rainy/0000_00.png", "set1/train/rainy/0000_01.png", "set1/train/rainy/0000_02.png",
         "set1/train/gt/0000.png", "set3/test/rainy/0185_00.png", "set3/test/gt/0185.png", "set3/test/rainy/0186_00.png")
    assert listed("gtav_nightrain", tmp_path) == [
        ("set1/train/rainy/0000_00.png", "set1/train/gt/0000.png", "night_streak"),
        ("set1/train/rainy/0000_01.png", "set1/train/gt/0000.png", "night_streak"),
        ("set1/train/rainy/0000_02.png", "set1/train/gt/0000.png", "night_streak"),
        ("set3/test/rainy/0185_00.png", "set3/test/gt/0185.png", "night_streak"),
        ("set3/test/rainy/0186_00.png", None, "night_streak"),
    ]


def test_gtrain_scene_folders(tmp_path):
    scene = "GT-RAIN_train/Gurutto_0-0"
    make(tmp_path, f"{scene}/Gurutto_0-0-Webcam-R-000.png", f"{scene}/Gurutto_0-0-Webcam-R-040.png",
         f"{scene}/Gurutto_0-0-Webcam-C-000.png", "GT-RAIN_test/Oinari_1-1/Oinari_1-1-Webcam-R-003.png",
         "GT-RAIN_test/Oinari_1-1/notes.txt")
    assert listed("gtrain", tmp_path) == [
        ("GT-RAIN_test/Oinari_1-1/Oinari_1-1-Webcam-R-003.png", None, "day_streak"),
        (f"{scene}/Gurutto_0-0-Webcam-R-000.png", f"{scene}/Gurutto_0-0-Webcam-C-000.png", "day_streak"),
        (f"{scene}/Gurutto_0-0-Webcam-R-040.png", f"{scene}/Gurutto_0-0-Webcam-C-000.png", "day_streak"),
    ]
    # a root that is one scene folder works too
    assert len(listed("gtrain", tmp_path / scene)) == 2


def test_gtrain_prefers_the_clean_frame_of_the_same_number(tmp_path):
    make(tmp_path, "s/s-R-000.png", "s/s-R-001.png", "s/s-R-002.png", "s/s-C-000.png", "s/s-C-001.png")
    assert [c for _, c, _ in listed("gtrain", tmp_path)] == ["s/s-C-000.png", "s/s-C-001.png", "s/s-C-000.png"]


# ---- drops and mixed types ------------------------------------------------------------------------

def test_raindrop_splits_and_extensions(tmp_path):
    make(tmp_path, "train/data/0_rain.png", "train/gt/0_clean.png", "test_b/data/1_rain.jpg", "test_b/gt/1_clean.jpg",
         "test_a/data/2_rain.png", "test_a/gt/3_clean.png")
    assert listed("raindrop", tmp_path) == [
        ("test_a/data/2_rain.png", None, "day_drop"),
        (None, "test_a/gt/3_clean.png", "day_drop"),  # a clean file without its rainy twin: missing_rainy
        ("test_b/data/1_rain.jpg", "test_b/gt/1_clean.jpg", "day_drop"),
        ("train/data/0_rain.png", "train/gt/0_clean.png", "day_drop"),
    ]


def test_rainds_syn_and_real_types_by_folder(tmp_path):
    syn, real = "RainDS_syn/train", "RainDS_real/test"
    make(tmp_path, f"{syn}/rainstreak/rain-1.png", f"{syn}/rainstreak/pie-rain-2.png", f"{syn}/raindrop/rd-1.png",
         f"{syn}/raindrop/pie-rd-2.png", f"{syn}/rainstreak_raindrop/rd-rain-1.png",
         f"{syn}/rainstreak_raindrop/pie-rd-rain-3.png", f"{syn}/gt/norain-1.png", f"{syn}/gt/pie-norain-2.png",
         f"{real}/rainstreak/5.png", f"{real}/raindrop/5.png", f"{real}/rainstreak_raindrop/5.png", f"{real}/gt/5.png")
    assert listed("rainds", tmp_path) == [
        (f"{real}/rainstreak/5.png", f"{real}/gt/5.png", "day_streak"),
        (f"{real}/raindrop/5.png", f"{real}/gt/5.png", "day_drop"),
        (f"{real}/rainstreak_raindrop/5.png", f"{real}/gt/5.png", "day_drop"),
        (f"{syn}/rainstreak/pie-rain-2.png", f"{syn}/gt/pie-norain-2.png", "day_streak"),
        (f"{syn}/rainstreak/rain-1.png", f"{syn}/gt/norain-1.png", "day_streak"),
        (f"{syn}/raindrop/pie-rd-2.png", f"{syn}/gt/pie-norain-2.png", "day_drop"),
        (f"{syn}/raindrop/rd-1.png", f"{syn}/gt/norain-1.png", "day_drop"),
        (f"{syn}/rainstreak_raindrop/pie-rd-rain-3.png", None, "day_drop"),
        (f"{syn}/rainstreak_raindrop/rd-rain-1.png", f"{syn}/gt/norain-1.png", "day_drop"),
    ]
    # a fixed source type overrides the folders
    assert {t for _, _, t in listed("rainds", tmp_path / syn, "night_drop")} == {"night_drop"}


def test_realrain1k_subsets_and_splits(tmp_path):
    make(tmp_path, "RealRain-1k-H/train/input/1.png", "RealRain-1k-H/train/target/1.png",
         "RealRain-1k-L/test/input/2.png", "RealRain-1k-L/test/target/2.png")
    assert listed("realrain1k", tmp_path) == [
        ("RealRain-1k-H/train/input/1.png", "RealRain-1k-H/train/target/1.png", "day_streak"),
        ("RealRain-1k-L/test/input/2.png", "RealRain-1k-L/test/target/2.png", "day_streak"),
    ]
    assert len(listed("realrain1k", tmp_path / "RealRain-1k-L")) == 1


def test_dataset_folders_above_a_layout_must_look_like_the_dataset(tmp_path):
    # a parent of several datasets: each adapter takes its own and leaves the others alone
    make(tmp_path, "Rain13K/input/1.png", "Rain13K/target/1.png", "RealRain-1k-H/train/input/2.png",
         "RealRain-1k-H/train/target/2.png", "Rain100H/rainy/rain-001.png", "Rain100H/norain-001.png",
         "GTAV-NightRain/set2/test/rainy/0000_00.png", "GTAV-NightRain/set2/test/gt/0000.png")
    assert [r for r, _, _ in listed("realrain1k", tmp_path)] == ["RealRain-1k-H/train/input/2.png"]
    assert [r for r, _, _ in listed("gtav_nightrain", tmp_path / "GTAV-NightRain")] == ["set2/test/rainy/0000_00.png"]
    with pytest.raises(ValueError, match="rainy/NNNN_KK.png"):  # Rain100H's rainy/ is not GTAV-NightRain
        listed("gtav_nightrain", tmp_path)


def test_rainds_split_without_gt_lists_rainy_without_twins(tmp_path):
    make(tmp_path, "test/raindrop/rd-4.png")
    assert listed("rainds", tmp_path) == [("test/raindrop/rd-4.png", None, "day_drop")]


# ---- SPA-Data ---------------------------------------------------------------------------------------

def test_spa_training_list_and_test_folder(tmp_path):
    make(tmp_path, "Training/real_world/000/000-1/000-1_1_1.png", "Training/real_world/000/000-2/000-2_1_1.png",
         "Training/real_world_gt/000/000_1_1.png", "Training/real_world/001/001-1/001-1_0_0.png",
         "Testing/real_test_1000/rain/000.png", "Testing/real_test_1000/gt/000gt.png",
         "Testing/real_test_1000/rain/001.png")
    (tmp_path / "Training/real_world.txt").write_text(
        "/real_world/000/000-1/000-1_1_1.png /real_world_gt/000/000_1_1.png\n"
        "/real_world/000/000-2/000-2_1_1.png /real_world_gt/000/000_1_1.png\n"
        "/real_world/001/001-1/001-1_0_0.png /real_world_gt/001/001_0_0.png\n\n")
    assert listed("spa", tmp_path) == [
        ("Testing/real_test_1000/rain/000.png", "Testing/real_test_1000/gt/000gt.png", "day_streak"),
        ("Testing/real_test_1000/rain/001.png", None, "day_streak"),
        ("Training/real_world/000/000-1/000-1_1_1.png", "Training/real_world_gt/000/000_1_1.png", "day_streak"),
        ("Training/real_world/000/000-2/000-2_1_1.png", "Training/real_world_gt/000/000_1_1.png", "day_streak"),
        ("Training/real_world/001/001-1/001-1_0_0.png", None, "day_streak"),
    ]


def test_spa_training_folders_without_list(tmp_path):
    make(tmp_path, "real_world/000/000-1/000-1_1_1.png", "real_world/000/000-2/000-2_1_1.png",
         "real_world_gt/000/000_1_1.png", "real_world/000/000-1/000-1_2_1.png")
    assert listed("spa", tmp_path) == [
        ("real_world/000/000-1/000-1_1_1.png", "real_world_gt/000/000_1_1.png", "day_streak"),
        ("real_world/000/000-1/000-1_2_1.png", None, "day_streak"),
        ("real_world/000/000-2/000-2_1_1.png", "real_world_gt/000/000_1_1.png", "day_streak"),
    ]


def test_spa_training_folder_without_gt_lists_rainy_without_twins(tmp_path):
    make(tmp_path, "real_world/000/000-1/000-1_1_1.png")
    assert listed("spa", tmp_path) == [("real_world/000/000-1/000-1_1_1.png", None, "day_streak")]


def test_spa_bad_list_line_names_file_and_line(tmp_path):
    make(tmp_path, "real_world/a.png")
    (tmp_path / "real_world.txt").write_text("/real_world/a.png\n")
    with pytest.raises(ValueError, match=r"real_world.txt:1"):
        listed("spa", tmp_path)


def test_spa_test_set_as_restormer_copy(tmp_path):
    make(tmp_path, "input/1.png", "target/1.png")
    assert listed("spa", tmp_path) == [("input/1.png", "target/1.png", "day_streak")]


# ---- with real files, through ingest's probing ---------------------------------------------------

def test_real_images_missing_twin_becomes_missing_clean_reject(tmp_path):
    from tasks.config import IngestConfig
    from tasks.ingest.stage import probe_pairs

    rng = np.random.default_rng(0)
    for rel, fmt in [("train/data/0_rain.png", "PNG"), ("train/gt/0_clean.png", "PNG"), ("train/data/1_rain.jpg", "JPEG")]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(path, fmt)
    listings = list(get_adapter("raindrop").list_pairs(tmp_path, "day_drop"))
    rows, rejects = probe_pairs("raindrop", listings, IngestConfig())
    assert [(r["rain_type"], r["width"], r["height"]) for r in rows] == [("day_drop", 80, 64)]
    assert [(r["reason"], Path(r["path"]).name) for r in rejects] == [("missing_clean", "1_rain.jpg")]
