"""Snow and fog synthesis (issue 14): layout and determinism beside the rain types, and that each
changes an image the way that weather does (snow: bright, local flakes of several sizes; fog: the
atmospheric scattering model, a veil that grows with depth towards a bright airlight)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from data_manifests.schemas import RAIN_TYPES, TYPE_FOLDERS
from tasks.offline.synth import CleanSource, render, synthesize_gallery, synthesize_paired
from tasks.offline.synth import fog
from tasks.offline.synth.ops import luma
from tasks.offline.synth.synthesize import image_rng

SIZE = (96, 80)


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_six_type_layout_is_deterministic_and_keeps_rain_images(tmp_path):
    six = synthesize_paired(tmp_path / "a", per_type=1, seed=5, size=SIZE, rain_types="all")
    assert [i.rain_type for i in six] == [*RAIN_TYPES, "snow", "fog"]
    got = files(tmp_path / "a")
    assert sorted(got) == sorted(f"{TYPE_FOLDERS[t]}/{part}/{TYPE_FOLDERS[t]}_00000.png"
                                 for t in TYPE_FOLDERS for part in ("input", "target"))
    synthesize_paired(tmp_path / "b", per_type=1, seed=5, size=SIZE, rain_types=["fog", "snow"])
    again = files(tmp_path / "b")
    assert again == {k: v for k, v in got.items() if k.startswith(("snow/", "fog/"))}  # same seed, same bytes
    synthesize_paired(tmp_path / "c", per_type=1, seed=5, size=SIZE)  # the default: the four rain types
    assert files(tmp_path / "c") == {k: v for k, v in got.items() if not k.startswith(("snow/", "fog/"))}
    synthesize_paired(tmp_path / "d", per_type=1, seed=6, size=SIZE, rain_types="snow")
    assert files(tmp_path / "d")["snow/input/snow_00000.png"] != got["snow/input/snow_00000.png"]


def test_gallery_can_cycle_the_weather_types(tmp_path):
    items = synthesize_gallery(tmp_path, 4, seed=1, size=SIZE, rain_types=["snow", "fog"])
    assert [i.name for i in items] == ["synthetic_snow_00000.png", "synthetic_fog_00001.png",
                                       "synthetic_snow_00002.png", "synthetic_fog_00003.png"]


def rendered(kind: str, n: int = 4, size=(128, 128), profile="paired"):
    src = CleanSource()
    for i in range(n):
        clean = src.sample(image_rng(3, profile, kind, i), size)
        yield clean, render(src, kind, profile, 3, i, size)


def test_snow_is_bright_local_flakes_of_several_sizes():
    for clean, (snowy, target) in rendered("snow"):
        assert np.array_equal(target, clean)
        d = luma(snowy) - luma(target)
        assert d.mean() > 0.005                                    # snow adds light
        flakes = d > 0.15
        assert 0.005 < flakes.mean() < 0.5                         # flakes, not a wash
        from scipy import ndimage
        labels, n = ndimage.label(flakes)
        sizes = np.bincount(labels.ravel())[1:]
        assert n >= 10 and sizes.max() >= 4 * np.median(sizes)     # many flakes, of different sizes


def test_fog_follows_the_scattering_model_with_depth():
    for clean, (foggy, target) in rendered("fog"):
        assert np.array_equal(target, clean)
        # I - A = (J - A) t: towards a bright airlight, contrast shrinks everywhere
        assert foggy.std() < clean.std()
        assert luma(foggy).mean() > luma(clean).mean() - 0.02
        # more haze at the top of the frame (farther) than at the bottom (nearer)
        diff = np.abs(foggy - clean).mean(-1)
        assert diff[: 32].mean() > diff[-32:].mean()


def test_fog_is_the_scattering_model():
    rng = np.random.default_rng(0)
    clean = rng.random((32, 48, 3), dtype=np.float32)
    depth = fog.plausible_depth(clean, np.random.default_rng(1), fog.PAIRED)
    assert depth.shape == (32, 48) and 0.0 <= depth.min() and depth.max() <= 1.0 + 1e-6
    assert depth[:4].mean() > depth[-4:].mean()                 # the top of the frame is farther
    a = np.array([0.9, 0.92, 0.95], np.float32)
    foggy = fog.scatter(clean, depth, 1.5, a)
    t = np.exp(-1.5 * depth)[..., None]
    np.testing.assert_allclose(foggy, clean * t + a * (1 - t), atol=1e-6)
    np.testing.assert_allclose((foggy - a) / (clean - a), np.broadcast_to(t, clean.shape), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(fog.scatter(clean, np.zeros((32, 48), np.float32), 2.0, a), clean)  # no depth: clear
