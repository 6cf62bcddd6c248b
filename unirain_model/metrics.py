"""PSNR and SSIM the way the restoration community reports them (BasicSR / MATLAB conventions).

Inputs are uint8 H×W×3 **RGB** arrays (what PIL gives). The numbers equal BasicSR's
`calculate_psnr` / `calculate_ssim` given the same images in BGR order:
- PSNR on float64 with peak 255 (`inf` for identical images);
- SSIM per channel with an 11×11 Gaussian window (σ = 1.5), constants (0.01·255)², (0.03·255)²,
  statistics kept only where the window fits inside the image ("valid"), channel mean;
- `y_channel`: Y of ITU-R BT.601 YCbCr, Y = 16 + (65.481 R + 128.553 G + 24.966 B)/255 on 0..255,
  computed with BasicSR's float32 round trip so even the last bits match;
- `crop_border` pixels removed from every edge first.
The Gaussian filter is separable, so two 1-D passes replace cv2's 2-D `filter2D` (same result up to
floating-point rounding, far below the 1e-5 tolerance).

Two protocols (`score(..., protocol=)`), because published figures use either and they differ:
- `basicsr` (default): the above on the output rounded to uint8, RGB and Y.
- `released`: the authors' released `test.py` (PromptIR's convention): the rainy and clean images are
  centre-cropped to a multiple of 16 *before* inference, the clamped float output is not rounded,
  PSNR with data_range 1 and scikit-image's default SSIM (7×7 uniform window, sample covariance,
  data_range 1) on RGB. That SSIM is lower than BasicSR's on the same pair (0.3176 vs 0.3322 on one
  noisy pair), so a figure means nothing without its protocol. The released code reports no Y
  figures: under `released` the Y columns are NaN.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate1d

_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2

PROTOCOLS = ("basicsr", "released")
RELEASED_BASE = 16  # the released test.py crops every test image to a multiple of 16
PROTOCOL_NOTES = {
    "basicsr": "BasicSR: uint8 output; PSNR; SSIM 11x11 Gaussian (sigma 1.5), valid window, channel mean; RGB and Y (BT.601)",
    "released": "released test.py: centre crop to a multiple of 16, float output; PSNR; "
                "scikit-image SSIM (7x7 uniform window), RGB only",
}


def gaussian_kernel_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """cv2.getGaussianKernel(size, sigma) for sigma > 0: exp(-x²/2σ²) normalised to sum 1."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    k = np.exp(-(x**2) / (2.0 * sigma**2))
    return k / k.sum()


def _check(img: np.ndarray, ref: np.ndarray) -> None:
    if img.shape != ref.shape:
        raise ValueError(f"image shapes differ: {img.shape} vs {ref.shape}")
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected H×W×3 RGB arrays, got shape {img.shape}")


def _prepare(img: np.ndarray, crop_border: int, y_channel: bool) -> np.ndarray:
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border, ...]
    if y_channel:
        img = rgb_to_y(img)[..., None]
    return img.astype(np.float64)


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Y channel on 0..255 (float), exactly as BasicSR's `to_y_channel` computes it.

    BasicSR: uint8 → float32 / 255 → dot with the BT.601 row + 16 (float64) → /255 → float32
    → ×255 (float32).
    """
    x = img.astype(np.float32) / np.float32(255.0)
    y = np.dot(x, np.array([65.481, 128.553, 24.966])) + 16.0
    y = (y / 255.0).astype(np.float32)
    return y * np.float32(255.0)


def psnr(img: np.ndarray, ref: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    _check(img, ref)
    a = _prepare(img, crop_border, y_channel)
    b = _prepare(ref, crop_border, y_channel)
    mse = np.mean((a - b) ** 2)
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(255.0 * 255.0 / mse))


def _filter_valid(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    r = k.shape[0] // 2
    out = correlate1d(x, k, axis=0, mode="mirror")
    out = correlate1d(out, k, axis=1, mode="mirror")
    return out[r:-r, r:-r]


def _ssim_channel(a: np.ndarray, b: np.ndarray, k: np.ndarray) -> float:
    mu1 = _filter_valid(a, k)
    mu2 = _filter_valid(b, k)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = _filter_valid(a * a, k) - mu1_sq
    s2 = _filter_valid(b * b, k) - mu2_sq
    s12 = _filter_valid(a * b, k) - mu1_mu2
    num = (2 * mu1_mu2 + _C1) * (2 * s12 + _C2)
    den = (mu1_sq + mu2_sq + _C1) * (s1 + s2 + _C2)
    return float(np.mean(num / den))


def ssim(img: np.ndarray, ref: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    _check(img, ref)
    a = _prepare(img, crop_border, y_channel)
    b = _prepare(ref, crop_border, y_channel)
    if min(a.shape[0], a.shape[1]) < 11:
        raise ValueError(f"SSIM needs at least 11×11 pixels after cropping, got {a.shape[:2]}")
    k = gaussian_kernel_1d()
    # Channel order does not change a per-channel mean, so RGB gives BasicSR's BGR number.
    return float(np.mean([_ssim_channel(a[..., c], b[..., c], k) for c in range(a.shape[2])]))


def to_uint8(x) -> np.ndarray:
    """A float image in [0, 1] (tensor C×H×W or array H×W×C) → uint8 H×W×C, rounded like BasicSR."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().clamp_(0, 1).numpy()
        if x.ndim == 3 and x.shape[0] in (1, 3):
            x = x.transpose(1, 2, 0)
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    return np.round(x * 255.0).astype(np.uint8)


# ----------------------------------------------------------------------------- protocols
def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    return protocol


def crop_to_multiple(img: np.ndarray, base: int = RELEASED_BASE) -> np.ndarray:
    """Centre crop of H×W(×C) down to multiples of `base`, exactly as the released code's `crop_img`
    (offset floor(remainder / 2) on each axis)."""
    h, w = img.shape[:2]
    ch, cw = h % base, w % base
    if h - ch == 0 or w - cw == 0:
        raise ValueError(f"image {w}x{h} is smaller than {base}x{base}: nothing left after cropping to a multiple of {base}")
    return img[ch // 2 : h - ch + ch // 2, cw // 2 : w - cw + cw // 2, ...]


def prepare_pair(rainy: np.ndarray, clean: np.ndarray, protocol: str = "basicsr") -> tuple[np.ndarray, np.ndarray]:
    """The images a protocol feeds to the network and scores against (released: cropped to 16s)."""
    if check_protocol(protocol) == "released":
        return crop_to_multiple(rainy), crop_to_multiple(clean)
    return rainy, clean


def released_psnr(out: np.ndarray, ref: np.ndarray) -> float:
    """skimage.metrics.peak_signal_noise_ratio(ref, out, data_range=1) on [0, 1] floats."""
    from skimage.metrics import peak_signal_noise_ratio

    a, b = _unit_float(out), _unit_float(ref)
    if np.array_equal(a, b):
        return float("inf")  # skimage would warn about a division by zero
    return float(peak_signal_noise_ratio(b, a, data_range=1.0))


def released_ssim(out: np.ndarray, ref: np.ndarray) -> float:
    """scikit-image's default SSIM on RGB (`structural_similarity(ref, out, data_range=1,
    channel_axis=-1)`: 7×7 uniform window, sample covariance, mean over the valid area per channel)."""
    from skimage.metrics import structural_similarity

    a, b = _unit_float(out), _unit_float(ref)
    if min(a.shape[0], a.shape[1]) < 7:
        raise ValueError(f"SSIM needs at least 7×7 pixels, got {a.shape[:2]}")
    return float(structural_similarity(b, a, data_range=1.0, channel_axis=-1))


def _unit_float(x: np.ndarray) -> np.ndarray:
    """uint8 → float32/255; floats clamped to [0, 1] (float32, as the released code's tensors are)."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def score(out: np.ndarray, ref: np.ndarray, protocol: str = "basicsr", crop_border: int = 0) -> dict[str, float]:
    """psnr, ssim, psnr_y, ssim_y of `out` (uint8, or float in [0, 1]) against uint8 `ref`, both
    already prepared with `prepare_pair`. basicsr rounds a float `out` to uint8 first (like a saved
    image); released scores the float as it is and has no Y figures (NaN)."""
    _check(out, ref)
    if check_protocol(protocol) == "released":
        if crop_border:
            raise ValueError("crop_border: the released protocol has no border crop (it crops to multiples of 16)")
        return {"psnr": released_psnr(out, ref), "ssim": released_ssim(out, ref), "psnr_y": float("nan"), "ssim_y": float("nan")}
    if out.dtype != np.uint8:
        out = to_uint8(out)
    return {"psnr": psnr(out, ref, crop_border), "ssim": ssim(out, ref, crop_border),
            "psnr_y": psnr(out, ref, crop_border, y_channel=True), "ssim_y": ssim(out, ref, crop_border, y_channel=True)}
