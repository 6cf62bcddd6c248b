"""Rain synthesis: layout, determinism, `--clean`, and that each rain type changes an image the way
that kind of rain does (streaks: bright, thin, near-vertical; drops: local lenses that flip the
scene; night: darker scenes, streaks lit only near lights). Small images keep it fast."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_manifests.degradations import all_types
from data_manifests.schemas import RAIN_TYPE_FOLDERS, RAIN_TYPES
from tasks.offline.synth import RAIN_GENERATORS, CleanSource, parse_size, register_rain, render, synthesize_gallery, synthesize_paired
from tasks.offline.synth import drops, night
from tasks.offline.synth.ops import luma
from tasks.offline.synth.synthesize import image_rng

SIZE = (96, 80)  # (width, height): not square, so a swapped axis shows


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


@pytest.fixture(scope="module")
def paired_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("paired")
    synthesize_paired(out, per_type=2, seed=7, size=SIZE)
    return out


# ---- layout, sizes, determinism -------------------------------------------------------------

def test_registry_holds_every_declared_type():
    assert set(RAIN_GENERATORS) == set(RAIN_TYPES) | {"snow", "fog"} == set(all_types())
    with pytest.raises(ValueError, match="rain generator 'day_streak' is already registered"):
        register_rain("day_streak")(lambda clean, rng, profile: None)
    with pytest.raises(ValueError, match="unknown degradation type 'sandstorm'"):
        register_rain("sandstorm")


def test_paired_layout_names_and_sizes(paired_run):
    for rain_type, folder in RAIN_TYPE_FOLDERS.items():
        inputs = sorted(p.name for p in (paired_run / folder / "input").iterdir())
        targets = sorted(p.name for p in (paired_run / folder / "target").iterdir())
        assert inputs == targets == [f"{folder}_00000.png", f"{folder}_00001.png"]
        for name in inputs:
            for part in ("input", "target"):
                with Image.open(paired_run / folder / part / name) as im:
                    assert (im.format, im.mode, im.size) == ("PNG", "RGB", SIZE)
    assert sorted(p.name for p in paired_run.iterdir()) == sorted(RAIN_TYPE_FOLDERS.values())


def test_same_seed_same_bytes_other_seed_other_images(paired_run, tmp_path):
    again = synthesize_paired(tmp_path / "again", per_type=2, seed=7, size=SIZE)
    assert len(again) == 8
    assert files(tmp_path / "again") == files(paired_run)
    other = files(Path(synthesize_paired(tmp_path / "other", per_type=2, seed=8, size=SIZE)[0].input_path).parents[2])
    same = files(paired_run)
    assert other.keys() == same.keys()
    assert all(other[k] != same[k] for k in same if "/input/" in k)


def test_an_image_does_not_depend_on_the_others(paired_run, tmp_path):
    # per-image generators: a smaller run, or one type alone, reproduces the same images
    synthesize_paired(tmp_path, per_type=1, seed=7, size=SIZE, rain_types=["night_drop"])
    assert files(tmp_path) == {k: v for k, v in files(paired_run).items() if k.startswith("nrd/") and "_00000" in k}


def test_rerun_into_a_folder_with_other_images_is_refused(paired_run, tmp_path):
    synthesize_paired(tmp_path, per_type=2, seed=1, size=SIZE)
    synthesize_paired(tmp_path, per_type=2, seed=1, size=SIZE)  # the same run again is fine
    with pytest.raises(FileExistsError, match="empty output folder"):
        synthesize_paired(tmp_path, per_type=1, seed=1, size=SIZE)


def test_gallery_is_unpaired_covers_all_types_and_differs_from_paired(paired_run, tmp_path):
    items = synthesize_gallery(tmp_path / "g", n=5, seed=7, size=SIZE)
    names = sorted(p.name for p in (tmp_path / "g").iterdir())
    assert names == sorted(i.name for i in items) and len(names) == 5
    assert {i.rain_type for i in items} == set(RAIN_TYPES)
    assert all(i.target_path is None and i.name.startswith("synthetic_") for i in items)
    for p in (tmp_path / "g").iterdir():
        with Image.open(p) as im:
            assert im.size == SIZE
    synthesize_gallery(tmp_path / "g2", n=5, seed=7, size=SIZE)
    assert files(tmp_path / "g") == files(tmp_path / "g2")
    gallery = {i.name.split("_", 1)[1]: i.input_path.read_bytes() for i in items}  # "drs_00000.png" -> bytes
    paired = {k.split("/")[-1]: v for k, v in files(paired_run).items() if "/input/" in k}
    assert all(gallery[k] != paired[k] for k in gallery if k in paired)


def test_gallery_profile_uses_different_ranges():
    assert drops.GALLERY != drops.PAIRED and night.GALLERY != night.PAIRED
    from tasks.offline.synth import streaks
    assert streaks.GALLERY != streaks.PAIRED


@pytest.mark.parametrize("text,size", [("256x256", (256, 256)), ("320X200", (320, 200)), (" 64x96 ", (64, 96))])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["256", "256x", "x256", "-64x64", "64x64x3", "32x256", "abc", "9000x64"])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_bad_arguments_fail_before_writing(tmp_path):
    with pytest.raises(ValueError, match="unknown degradation type 'sandstorm'"):
        synthesize_paired(tmp_path, 1, rain_types=["sandstorm"], size=SIZE)
    with pytest.raises(ValueError, match="seed"):
        synthesize_gallery(tmp_path, 1, seed=-1, size=SIZE)
    with pytest.raises(ValueError, match="between 64"):
        synthesize_paired(tmp_path, 1, size=(32, 64))
    with pytest.raises(ValueError, match="per_type"):
        synthesize_paired(tmp_path, 0, size=SIZE)
    assert not any(tmp_path.iterdir())


# ---- clean images -----------------------------------------------------------------------------

def test_builtin_photos_all_load():
    src = CleanSource()
    assert len(src) == 9
    for i in range(len(src)):
        photo = src.photo(i)
        assert photo.mode == "RGB" and min(photo.size) >= 256


def test_clean_dir_is_used(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "clean" / "sub").mkdir(parents=True)
    # two distinctly blue, textured photos, one in a subfolder, one smaller than the output size
    for path, shape in ((tmp_path / "clean" / "a.png", (120, 150)), (tmp_path / "clean" / "sub" / "b.jpg", (60, 70))):
        img = np.zeros(shape + (3,), np.uint8)
        img[..., 2] = rng.integers(150, 256, shape)
        img[..., 1] = rng.integers(0, 40, shape)
        Image.fromarray(img).save(path)
    (tmp_path / "clean" / "notes.txt").write_text("not an image, ignored by suffix")
    items = synthesize_paired(tmp_path / "out", per_type=2, seed=0, clean_dir=tmp_path / "clean", size=SIZE)
    for item in items:
        target = np.asarray(Image.open(item.target_path), np.float32) / 255
        if item.rain_type.startswith("day"):
            assert target[..., 2].mean() > 0.55 and target[..., 0].mean() < 0.03 and target[..., 1].mean() < 0.2
        else:  # the night version of a blue scene is still blue, and darker
            assert target[..., 2].mean() > 2 * target[..., 0].mean()


def test_clean_dir_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        synthesize_paired(tmp_path / "out", 1, clean_dir=tmp_path / "missing", size=SIZE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        synthesize_paired(tmp_path / "out", 1, clean_dir=tmp_path / "empty", size=SIZE)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        synthesize_paired(tmp_path / "out", 1, clean_dir=tmp_path / "bad", size=SIZE)


# ---- the rain looks like rain -------------------------------------------------------------------

def rendered(rain_type: str, n: int = 4, size=(128, 128)):
    src = CleanSource()
    for i in range(n):
        rng = image_rng(3, "paired", rain_type, i)
        clean = src.sample(rng, size)
        yield clean, render(src, rain_type, "paired", 3, i, size)


def test_day_streaks_are_bright_thin_and_near_vertical():
    for clean, (rainy, target) in rendered("day_streak"):
        assert np.array_equal(target, clean)
        d = luma(rainy) - luma(target)
        assert d.mean() > 0.005                        # rain adds light
        assert np.median(np.abs(d)) < 0.3 * np.percentile(np.abs(d), 99)  # in thin structures, not a wash
        gx, gy = np.abs(np.diff(d, axis=1)).mean(), np.abs(np.diff(d, axis=0)).mean()
        assert gx > 1.3 * gy                           # edges run within 30 degrees of vertical


def test_day_drops_change_local_regions_only():
    for clean, (rainy, target) in rendered("day_drop"):
        assert np.array_equal(target, clean)
        changed = np.abs(rainy - target).max(-1) > 4 / 255
        assert 0.01 < changed.mean() < 0.8
        # the unchanged rest is a single connected background, not scattered noise
        assert np.abs(rainy - target).max(-1)[~changed].max() <= 4 / 255


def test_a_drop_shows_the_scene_upside_down():
    # a scene bright at the top and dark at the bottom: through a drop, brightness rises going down
    h = w = 256
    ramp = np.repeat(np.linspace(1.0, 0.0, h, dtype=np.float32)[:, None, None], w, 1).repeat(3, 2)
    one_drop = replace(drops.PAIRED, count=(1, 1), radius=(20.0, 20.0), p_metaball=0.0, elongation=(1.0, 1.0),
                       p_highlight=0.0, edge_dark=(0.0, 0.0))
    checked = 0
    for seed in range(20):
        rho, cy, cx, _ = drops.drop_map((h, w), np.random.default_rng(seed), one_drop)
        centre_y, col = cy[rho < 1][0], int(round(cx[rho < 1][0]))
        if not 90 < centre_y < h - 90:  # near the border the lens would see past the image's edge
            continue
        out = drops.add_drops(ramp, np.random.default_rng(seed), one_drop)
        inside = np.nonzero(rho[:, col] < 0.6)[0]
        assert len(inside) > 15
        values = luma(out)[inside, col]
        assert values[-1] > values[0] + 0.1
        assert np.all(np.diff(values) > 0)
        checked += 1
    assert checked >= 3


def test_night_scenes_are_darker_than_the_photo():
    for rain_type in ("night_streak", "night_drop"):
        for clean, (rainy, target) in rendered(rain_type, n=3):
            assert luma(target).mean() < 0.6 * luma(clean).mean()
            assert np.abs(rainy - target).max() > 0.1  # some rain is clearly visible


def test_night_streaks_show_where_light_falls():
    src = CleanSource()
    for i in range(4):
        rng = image_rng(3, "paired", "night_streak", i)
        clean = src.sample(rng, (128, 128))
        _, light = night.to_night(clean, rng, night.PAIRED)  # the same draws the generator makes first
        rainy, target = render(src, "night_streak", "paired", 3, i, (128, 128))
        d, lit = luma(rainy) - luma(target), luma(light)
        assert d[lit > np.percentile(lit, 80)].mean() > 3 * d[lit < np.percentile(lit, 20)].mean()


def test_night_drops_catch_the_lights():
    src = CleanSource()
    for i in range(3):
        rng = image_rng(3, "paired", "night_drop", i)
        clean = src.sample(rng, (128, 128))
        scene, light = night.to_night(clean, rng, night.PAIRED)
        state = rng.bit_generator.state
        lit = drops.add_drops(scene, rng, night.PAIRED.drops, light=light)
        rng.bit_generator.state = state  # the same drops, without the lights' contribution
        unlit = drops.add_drops(scene, rng, night.PAIRED.drops)
        gain = luma(lit - unlit)
        assert gain.min() > -1e-5
        on_drop = gain > 1e-4
        assert on_drop.mean() > 0.01
        # on the drops, the extra light follows the light falling there
        g, lum = gain[on_drop], luma(light)[on_drop]
        assert g[lum > np.median(lum)].mean() > 2 * g[lum <= np.median(lum)].mean()


# ---- the command -------------------------------------------------------------------------------

def synth_args(*argv: str):
    from flows.cli import parse_args

    return parse_args(["synth", *argv])


def test_cli_paired_and_gallery(tmp_path, capsys):
    from flows.cli import main

    assert main(["synth", "--out", str(tmp_path / "p"), "--per-type", "1", "--seed", "7", "--size", "96x80"]) == 0
    assert len(files(tmp_path / "p")) == 8
    assert main(["synth", "--gallery", "--out", str(tmp_path / "g"), "--n", "4", "--size", "96x80"]) == 0
    assert len(files(tmp_path / "g")) == 4
    assert "SYNTHETIC" in capsys.readouterr().out
    assert main(["synth", "--out", str(tmp_path / "w"), "--per-type", "1", "--size", "96x80", "--types", "snow,fog"]) == 0
    assert sorted(files(tmp_path / "w")) == ["fog/input/fog_00000.png", "fog/target/fog_00000.png",
                                             "snow/input/snow_00000.png", "snow/target/snow_00000.png"]
    assert "1 per type: snow, fog" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--per-type", "1", "--size", "big"], "--size"),
    (["--per-type", "1", "--size", "32x32"], "between 64"),
    (["--per-type", "1", "--clean", "/no/such/folder"], "not found: /no/such/folder"),
    (["--per-type", "0"], "at least 1"),
    (["--per-type", "1", "--seed", "-1"], "--seed"),
    ([], "--per-type"),
    (["--gallery"], "--n"),
    (["--gallery", "--n", "2", "--per-type", "2"], "--per-type"),
    (["--per-type", "1", "--types", "snow,hail"], "--types: unknown degradation type 'hail'"),
])
def test_cli_refuses_bad_input(tmp_path, argv, message):
    from flows.cli import UserError

    args = synth_args("--out", str(tmp_path / "out"), *argv)
    with pytest.raises(UserError, match=message):
        args.func(args)
    assert not (tmp_path / "out").exists()


def test_cli_error_exit_code_and_help_says_synthetic(tmp_path, capsys):
    from flows.cli import app_command, main

    assert main(["synth", "--out", str(tmp_path), "--per-type", "1", "--size", "12x12"]) == 2
    assert "--size" in capsys.readouterr().err
    text = " ".join(app_command().commands["synth"].help.split())
    assert "SYNTHETIC" in text and "NOT real rain" in text
