"""tasks.retrieve.ssim against scikit-image's structural_similarity (the issue's definition), to 1e-4."""
import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

from tasks.retrieve.ssim import (RADIUS, gaussian_valid, gray_for_ssim, prepare_ssim_stats, ssim_images,
                        ssim_one_to_many, ssim_pairs)
from tasks.offline.synth import get_generator
from tasks.offline.synth.clean_photos import builtin_photo


def skimage_ssim(a, b):
    return structural_similarity(np.asarray(a, np.float64), np.asarray(b, np.float64), gaussian_weights=True,
                                 sigma=1.5, use_sample_covariance=False, data_range=1)


def photo_gray(name, size, box=None):
    img = builtin_photo(name)
    return gray_for_ssim(img.crop(box) if box else img, size)


def test_filter_is_skimages_gaussian_on_the_valid_region():
    a = np.random.default_rng(0).random((3, 40, 33), dtype=np.float32)
    ref = gaussian_filter(a.astype(np.float64), sigma=(0, 1.5, 1.5), truncate=3.5, mode="reflect")
    got = gaussian_valid(a)
    assert got.shape == (3, 40 - 2 * RADIUS, 33 - 2 * RADIUS)
    np.testing.assert_allclose(got, ref[:, RADIUS:-RADIUS, RADIUS:-RADIUS], atol=1e-6)


@pytest.mark.parametrize("shape", [(11, 11), (32, 32), (48, 64), (256, 256)])
def test_random_images_match_skimage(shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.random(shape, dtype=np.float32)
    ys = np.stack([rng.random(shape, dtype=np.float32),  # unrelated
                   np.clip(x + 0.05 * rng.standard_normal(shape), 0, 1),  # noisy copy
                   1 - x,  # negatively correlated
                   np.clip(x * 0.5 + 0.3, 0, 1)]).astype(np.float32)  # contrast/brightness change
    got = ssim_one_to_many(prepare_ssim_stats(x), prepare_ssim_stats(ys))
    want = [skimage_ssim(x, y) for y in ys]
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert len(set(np.round(want, 3))) == 4  # the cases really differ


def test_structured_images_match_skimage_and_identical_is_one():
    size = 128
    clean = builtin_photo("astronaut").crop((0, 0, 160, 160))
    rainy = get_generator("day_streak")(np.asarray(clean, np.float32) / 255, np.random.default_rng(1), "paired").rainy
    rainy = Image.fromarray((rainy * 255).round().astype(np.uint8))
    imgs = [gray_for_ssim(clean, size), gray_for_ssim(rainy, size), photo_gray("chelsea", size),
            photo_gray("coffee", size), np.roll(gray_for_ssim(clean, size), 3, axis=1),
            np.full((size, size), 0.5, np.float32), np.zeros((size, size), np.float32)]
    stats = prepare_ssim_stats(np.stack(imgs))
    for i, x in enumerate(imgs):
        got = ssim_one_to_many(stats[i], stats)
        want = [skimage_ssim(x, y) for y in imgs]
        np.testing.assert_allclose(got, want, atol=1e-4)
        assert got[i] == pytest.approx(1.0, abs=1e-6)
    # a rainy copy is far closer to its own clean photo than to another photo
    got = ssim_one_to_many(stats[1], stats)
    assert got[0] > 0.3 and got[0] > got[2] + 0.2 and got[0] > got[3] + 0.2


def test_reference_list_equals_batch_and_pairs_helper():
    rng = np.random.default_rng(3)
    x, ys = rng.random((24, 24), dtype=np.float32), rng.random((5, 24, 24), dtype=np.float32)
    sx, sy = prepare_ssim_stats(x), prepare_ssim_stats(ys)
    batch = ssim_one_to_many(sx, sy, chunk=3)
    np.testing.assert_allclose(ssim_one_to_many(sx, [sy[i] for i in range(5)]), batch, atol=1e-7)
    np.testing.assert_allclose(ssim_pairs(np.stack([x] * 5), ys), batch, atol=1e-7)
    assert ssim_one_to_many(sx, []).shape == (0,)


def test_gray_for_ssim_is_the_definition():
    img = builtin_photo("coffee")
    want = np.asarray(img.convert("L").resize((64, 64), Image.BILINEAR), np.float64) / 255
    got = gray_for_ssim(img, 64)
    assert got.dtype == np.float32 and got.shape == (64, 64)
    np.testing.assert_allclose(got, want, atol=1e-7)
    other = builtin_photo("rocket")
    assert ssim_images(img, other, 64) == pytest.approx(skimage_ssim(got, gray_for_ssim(other, 64)), abs=1e-4)


def test_too_small_and_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="window"):
        gray_for_ssim(builtin_photo("coffee"), 8)
    with pytest.raises(ValueError, match="window"):
        prepare_ssim_stats(np.zeros((10, 40), np.float32))
    with pytest.raises(ValueError, match="size mismatch"):
        ssim_one_to_many(prepare_ssim_stats(np.zeros((20, 20))), prepare_ssim_stats(np.zeros((2, 24, 24))))
    with pytest.raises(ValueError, match="one image"):
        ssim_one_to_many(prepare_ssim_stats(np.zeros((2, 20, 20))), prepare_ssim_stats(np.zeros((2, 20, 20))))
