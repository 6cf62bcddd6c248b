"""PSNR/SSIM against an independent transcription of BasicSR's algorithm (BGR input, 2-D window)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import convolve2d
from skimage.metrics import peak_signal_noise_ratio

from unirain_model.metrics import psnr, rgb_to_y, ssim


def _bgr_y(img_bgr: np.ndarray) -> np.ndarray:
    # BasicSR to_y_channel → bgr2ycbcr(y_only=True) on float32 [0, 1] input.
    x = img_bgr.astype(np.float32) / 255.0  # _convert_input_type_range keeps float32 [0, 1]
    y = np.dot(x, [24.966, 128.553, 65.481]) + 16.0
    y = (y / 255.0).astype(np.float32)
    return (y * 255.0)[..., None]


def _basicsr_ssim_bgr(img: np.ndarray, img2: np.ndarray, crop_border: int, y: bool) -> float:
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
        img2 = img2[crop_border:-crop_border, crop_border:-crop_border]
    if y:
        img, img2 = _bgr_y(img), _bgr_y(img2)
    img, img2 = img.astype(np.float64), img2.astype(np.float64)
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    g /= g.sum()
    window = np.outer(g, g)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    out = []
    for c in range(img.shape[2]):
        a, b = img[..., c], img2[..., c]
        f = lambda z: convolve2d(z, window, mode="valid")  # noqa: E731
        mu1, mu2 = f(a), f(b)
        s1, s2, s12 = f(a * a) - mu1**2, f(b * b) - mu2**2, f(a * b) - mu1 * mu2
        m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))
        out.append(m.mean())
    return float(np.mean(out))


def _basicsr_psnr_bgr(img, img2, crop_border, y):
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
        img2 = img2[crop_border:-crop_border, crop_border:-crop_border]
    if y:
        img, img2 = _bgr_y(img), _bgr_y(img2)
    return peak_signal_noise_ratio(img.astype(np.float64), img2.astype(np.float64), data_range=255)


def _pairs():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (67, 53, 3), dtype=np.uint8)
    noisy = np.clip(ref.astype(int) + rng.integers(-20, 21, ref.shape), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:80, 0:96]
    smooth = np.stack([(xx * 2) % 256, (yy * 3) % 256, (xx + yy) % 256], -1).astype(np.uint8)
    blurred = ((smooth.astype(int) + np.roll(smooth, 1, axis=1)) // 2).astype(np.uint8)
    # a colour cast: differs mostly in one channel, so RGB and Y results disagree
    cast = np.clip(smooth.astype(int) + [30, 0, -10], 0, 255).astype(np.uint8)
    return [(noisy, ref), (blurred, smooth), (cast, smooth)]


@pytest.mark.parametrize("crop_border", [0, 4])
@pytest.mark.parametrize("y_channel", [False, True])
def test_matches_basicsr_transcription(crop_border, y_channel):
    for img, ref in _pairs():
        bgr_img, bgr_ref = img[..., ::-1], ref[..., ::-1]
        want_p = _basicsr_psnr_bgr(bgr_img, bgr_ref, crop_border, y_channel)
        want_s = _basicsr_ssim_bgr(bgr_img, bgr_ref, crop_border, y_channel)
        assert psnr(img, ref, crop_border, y_channel) == pytest.approx(want_p, abs=1e-4)
        assert ssim(img, ref, crop_border, y_channel) == pytest.approx(want_s, abs=1e-5)


def test_y_differs_from_rgb_and_identity():
    img, ref = _pairs()[2]
    assert abs(psnr(img, ref) - psnr(img, ref, y_channel=True)) > 0.5
    assert psnr(ref, ref) == float("inf")
    assert ssim(ref, ref) == pytest.approx(1.0, abs=1e-12)
    # Y of pure white is 235, of black 16 (studio swing)
    y = rgb_to_y(np.array([[[255, 255, 255], [0, 0, 0]]], dtype=np.uint8))
    assert y[0, 0] == pytest.approx(235.0, abs=1e-3) and y[0, 1] == pytest.approx(16.0, abs=1e-5)


def test_bad_shapes_refused():
    a = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(ValueError, match="differ"):
        psnr(a, np.zeros((20, 21, 3), np.uint8))
    with pytest.raises(ValueError, match="11"):
        ssim(a, a, crop_border=5)
