"""PSNR/SSIM against an independent transcription of BasicSR's algorithm (BGR input, 2-D window), against
torchmetrics (a library users trust), and the released protocol against scikit-image's defaults."""
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


# ----------------------------------------------------------------------------- against torchmetrics
def _photo_pairs():
    """Real photos (shipped with scikit-image) with noise, blur and a colour cast."""
    from skimage import data as skdata

    rng = np.random.default_rng(1)
    out = []
    for img in (skdata.astronaut()[100:260, 150:330], skdata.chelsea()[60:200, 100:300], skdata.coffee()[:120, :150]):
        noisy = np.clip(img.astype(int) + rng.integers(-25, 26, img.shape), 0, 255).astype(np.uint8)
        p = np.pad(img.astype(int), ((2, 0), (2, 0), (0, 0)), mode="edge")  # shifted copies, no wrap-around
        blurred = ((img + p[:-2, 2:] + p[2:, :-2]) // 3).astype(np.uint8)
        cast = np.clip(img.astype(int) + [25, -5, 10], 0, 255).astype(np.uint8)
        out += [(noisy, img), (blurred, img), (cast, img)]
    return out


def _chw(a: np.ndarray):
    import torch

    a = a[..., None] if a.ndim == 2 else a
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))[None].astype(np.float64))


@pytest.mark.parametrize("y_channel", [False, True])
def test_matches_torchmetrics(y_channel):
    """Our BasicSR-protocol PSNR/SSIM against torchmetrics (Gaussian 11, σ 1.5, data_range 255), in float64.

    PSNR is the same formula; torchmetrics converts from natural logs with a float32 ln 10, hence 1e-5
    rather than 1e-9 (a relative 4e-8 of ~30 dB). SSIM: torchmetrics reflect-pads the image by 5 pixels and
    averages the SSIM map over every pixel, BasicSR (and we) average only where the 11×11 window fits
    ("valid"). Inside that valid area the two maps are the same numbers, so the mean of torchmetrics'
    full map without its 5-pixel rim equals ours to 1e-9. The plain torchmetrics figure also counts
    the rim, whose padded statistics differ; the gap is at most 2·rim/all pixels (SSIM values lie in
    [-1, 1]) and measured at most 0.011 on these 120-200 px crops (a 5-pixel rim is 12-15% of them); it shrinks
    as images grow.
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio as tm_psnr
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    for img, ref in _photo_pairs():
        a, b = (rgb_to_y(img), rgb_to_y(ref)) if y_channel else (img, ref)
        ta, tb = _chw(a), _chw(b)
        assert psnr(img, ref, y_channel=y_channel) == pytest.approx(tm_psnr(ta, tb, data_range=255.0).item(), abs=1e-5)
        whole, full = tm_ssim(ta, tb, gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=255.0,
                              return_full_image=True)
        ours = ssim(img, ref, y_channel=y_channel)
        assert full[..., 5:-5, 5:-5].mean().item() == pytest.approx(ours, abs=1e-9)
        h, w = a.shape[:2]
        rim = 1 - (h - 10) * (w - 10) / (h * w)
        assert abs(whole.item() - ours) <= 2 * rim
        assert abs(whole.item() - ours) < 0.02


# ----------------------------------------------------------------------------- the released protocol
def test_released_crop_is_centred_to_multiples_of_16():
    from unirain_model.metrics import crop_to_multiple, prepare_pair

    img = np.arange(37 * 50 * 3).reshape(37, 50, 3)
    out = crop_to_multiple(img)
    assert out.shape == (32, 48, 3)
    # remainders 5 and 2: offsets 5 // 2 = 2 rows and 2 // 2 = 1 column, as the released crop_img
    assert np.array_equal(out, img[2:34, 1:49])
    assert crop_to_multiple(img[:32, :48]).shape == (32, 48, 3)
    a, b = prepare_pair(img, img + 1, "released")
    assert a.shape == b.shape == (32, 48, 3)
    assert prepare_pair(img, img, "basicsr")[0] is img
    with pytest.raises(ValueError, match="smaller than 16"):
        crop_to_multiple(img[:15])


def test_released_scores_are_scikit_image_defaults():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from unirain_model.metrics import crop_to_multiple, score

    for img, ref in _photo_pairs()[:4]:
        a, b = crop_to_multiple(img), crop_to_multiple(ref)
        got = score(a, b, "released")
        fa, fb = a.astype(np.float32) / 255, b.astype(np.float32) / 255
        assert got["ssim"] == pytest.approx(structural_similarity(fb, fa, data_range=1.0, channel_axis=-1), abs=1e-7)
        assert got["psnr"] == pytest.approx(peak_signal_noise_ratio(fb, fa, data_range=1.0), abs=1e-6)
        assert np.isnan(got["psnr_y"]) and np.isnan(got["ssim_y"])  # the released code reports RGB only
        # a float output is scored as it is (clamped, not rounded to uint8)
        f = np.clip(fa + 0.3 / 255, 0, 1)
        assert score(f, b, "released")["psnr"] == pytest.approx(peak_signal_noise_ratio(fb, f, data_range=1.0), abs=1e-6)
        # the protocols are different numbers: a figure must name its protocol
        assert abs(score(a, b, "basicsr")["ssim"] - got["ssim"]) > 1e-3
    with pytest.raises(ValueError, match="crop_border"):
        score(a, b, "released", crop_border=4)
    with pytest.raises(ValueError, match="protocol"):
        score(a, b, "matlab")
