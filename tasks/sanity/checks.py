"""The sanity checks: pure functions of two `View`s (rainy input, clean target) -> one score each.

Every check is registered in `CHECKS` with its manifest column, the side of the threshold that fails
and its default threshold (measured on the planted set, `benchmarks/bench_sanity.py`; the table is
in `benchmarks/RESULTS.md`). The stage writes every score, so a threshold can be re-cut later.

What rain does to a good pair, and why each score tolerates it:
  - rain adds thin bright streaks, drops and a near-grey veil (haze, fog): a *local*, mostly additive
    change. The structure and colour checks therefore look at strongly low-passed images, colour is
    compared through a veil model (input ~= a * target + b, the same a and b in every channel for a
    grey veil), and sharpness is a |Laplacian| taken at the scene's strongest edges only;
  - drops leave most pixels untouched (synthetic day_drop pairs: ~84 % unchanged), so `no_rain` looks
    at the largest differences (a high percentile), not the mean.
  - rain does not follow the 8-px JPEG block grid, so `jpeg_target` measures edges on that grid only,
    and against the input's, so a pair stored at one JPEG quality on both sides is not flagged.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
from scipy import ndimage

from data_manifests.registry import Registry

from .views import View


@dataclass(frozen=True)
class Check:
    name: str            # the reject reason
    column: str          # the score's column in the `sanity` manifest
    fails: str           # "above" or "below": which side of the threshold is rejected
    default: float       # the default threshold (from the planted-set benchmark)
    unit: str            # how the score reads, for details and docs
    score: Callable[[View, View], float]
    # degradation types whose good pairs break the check's assumption: scored, never rejected by it
    skip_types: frozenset[str] = frozenset()

    def failed(self, value: float, threshold: float, rain_type: str | None = None) -> bool:
        if rain_type in self.skip_types:
            return False
        if value is None or not np.isfinite(value):
            return False  # an undefined score (a flat image) is no evidence
        return value > threshold if self.fails == "above" else value < threshold

    def detail(self, value: float, threshold: float) -> str:
        side = ">" if self.fails == "above" else "<"
        return f"{self.column} {value:.3g} {side} {threshold:g} ({self.unit})"


CHECKS: Registry[Check] = Registry("sanity check")


def register(check: Check) -> Check:
    CHECKS.add(check.name, check)
    return check


# --- helpers ----------------------------------------------------------------------------------------

def grey(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], np.float32)


_HANN: dict[tuple[int, int], np.ndarray] = {}


def _hann(shape: tuple[int, int]) -> np.ndarray:
    if shape not in _HANN:
        _HANN[shape] = np.outer(np.hanning(shape[0]), np.hanning(shape[1])).astype(np.float32)
    return _HANN[shape]


_BAND: dict[tuple[int, int, float], np.ndarray] = {}


def _band(h: int, w: int, band: float) -> np.ndarray:
    key = (h, w, band)
    if key not in _BAND:
        fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
        _BAND[key] = np.exp(-(fy ** 2 + fx ** 2) / (2 * band ** 2)).astype(np.float32)
    return _BAND[key]


def _subpixel(c_minus: float, c0: float, c_plus: float) -> float:
    denom = c_minus - 2.0 * c0 + c_plus
    return 0.0 if denom >= 0 else 0.5 * (c_minus - c_plus) / denom


def phase_shift(a: np.ndarray, b: np.ndarray, band: float = 0.25) -> tuple[float, float, float]:
    """(dy, dx, peak) translating `b` onto `a`, by phase correlation with sub-pixel peak fitting.

    The cross-power spectrum is whitened (classic phase correlation) and then weighted by a Gaussian
    in frequency (`band`, in cycles per pixel) so that rain streaks, which live at the highest
    frequencies, do not add a second, zero-shift peak."""
    h, w = a.shape
    win = _hann((h, w))
    fa = np.fft.rfft2((a - a.mean()) * win)
    fb = np.fft.rfft2((b - b.mean()) * win)
    cross = fa * np.conj(fb)
    cross /= np.abs(cross) + 1e-9
    cross *= _band(h, w, band)
    corr = np.fft.irfft2(cross, s=(h, w))
    iy, ix = np.unravel_index(int(np.argmax(corr)), corr.shape)
    peak = float(corr[iy, ix])
    dy = iy + _subpixel(corr[(iy - 1) % h, ix], peak, corr[(iy + 1) % h, ix])
    dx = ix + _subpixel(corr[iy, (ix - 1) % w], peak, corr[iy, (ix + 1) % w])
    dy = dy - h if dy > h / 2 else dy
    dx = dx - w if dx > w / 2 else dx
    return float(dy), float(dx), peak


def structure(a: np.ndarray, b: np.ndarray, window: int = 7, c: float = 1e-4) -> float:
    """Mean local correlation of two grey images (SSIM's structure term, `window`-px uniform window):
    1 for the same scene whatever its brightness and contrast, ~0 for unrelated scenes."""
    box = lambda x: ndimage.uniform_filter(x, window, mode="reflect")  # noqa: E731
    mu_a, mu_b = box(a), box(b)
    va = box(a * a) - mu_a ** 2
    vb = box(b * b) - mu_b ** 2
    cov = box(a * b) - mu_a * mu_b
    s = (cov + c / 2) / (np.sqrt(np.maximum(va, 0) * np.maximum(vb, 0)) + c / 2)
    return float(s.mean())


def box3(img: np.ndarray) -> np.ndarray:
    """3x3 mean with mirrored edges: `ndimage.uniform_filter(img, 3)` up to float rounding, ~4x faster
    on the 256-px views (six array additions instead of scipy's generic 1-D filter loops)."""
    p = np.pad(img, 1, mode="symmetric")  # scipy's "reflect"
    rows = p[:-2] + p[1:-1] + p[2:]
    return (rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]) * np.float32(1 / 9)


def laplacian(img: np.ndarray) -> np.ndarray:
    """4-neighbour Laplacian over the interior (one pixel smaller on each side)."""
    return (img[1:-1, :-2] + img[1:-1, 2:] + img[:-2, 1:-1] + img[2:, 1:-1]) - 4.0 * img[1:-1, 1:-1]


def trimmed_fit(x: np.ndarray, y: np.ndarray, keep: float = 0.6, rounds: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Per column c: y[:, c] ~= a[c] * x[:, c] + b[c] by least squares, refitted `rounds` times on the
    `keep` fraction of points with the smallest residuals: lit drops, streaks and flakes are outliers,
    the scene behind them is the line. x, y: (n, channels)."""
    w = np.ones_like(x)
    n_keep = max(2, int(round(keep * len(x))))
    a = b = np.zeros(x.shape[1], np.float32)
    for r in range(rounds + 1):
        sw = w.sum(0)
        mx, my = (w * x).sum(0) / sw, (w * y).sum(0) / sw
        dx = x - mx
        a = (w * dx * (y - my)).sum(0) / np.maximum((w * dx * dx).sum(0), 1e-9)
        b = my - a * mx
        if r < rounds:
            res = np.abs(y - (a * x + b))
            cut = np.partition(res, n_keep - 1, axis=0)[n_keep - 1]
            w = (res <= cut).astype(x.dtype)
    return a, b


# --- the checks ---------------------------------------------------------------------------------------

EDGE_QUANTILE = 90     # sharpness is compared where the target has its strongest 10 % of edges


def _top(values: np.ndarray, fraction: float) -> float:
    """The value at the `fraction` quantile (np.partition: no full sort)."""
    flat = values.ravel()
    k = min(len(flat) - 1, int(fraction * (len(flat) - 1)))
    return float(np.partition(flat, k)[k])


def no_rain_score(rainy: View, target: View) -> float:
    """99.9th percentile of |input - target| (3x3 box-averaged) on the grey `mid` views, in grey levels
    (0-255): rain changes some pixels a lot (a few drops are enough), a copy, a re-encoded copy or added
    noise changes none by more than a few levels once averaged over 3x3 pixels."""
    return _top(np.abs(box3(rainy.mid - target.mid)), 0.999)


def _structure_view(v: View) -> np.ndarray:
    return ndimage.median_filter(grey(v.tiny), 3)  # `tiny` is low-passed already; the median drops big drops


def lowpass_structure_score(rainy: View, target: View) -> float:
    """SSIM's structure term (local correlation, 7x7 window of `tiny`) of strongly low-passed grey
    images: brightness and contrast (veil, fog, night) do not count, only whether it is one scene."""
    return structure(_structure_view(rainy), _structure_view(target))


def shift_score(rainy: View, target: View) -> float:
    """The translation between input and target in pixels of the original image."""
    dy, dx, _ = phase_shift(grey(rainy.small), grey(target.small))
    return float(np.hypot(dy, dx) * rainy.scale)


def sharpness_score(rainy: View, target: View) -> float:
    """Target sharpness over input sharpness: mean |Laplacian| on `mid` at the scene's strongest edges,
    found on the smoothed target (a blurred target still marks where its edges are; the input would
    mark lit streaks instead). Elsewhere rain streaks would make every input look sharper than its target."""
    smooth = box3(target.mid)
    gy = smooth[2:, 1:-1] - smooth[:-2, 1:-1]
    gx = smooth[1:-1, 2:] - smooth[1:-1, :-2]
    edges = gx * gx + gy * gy
    at = edges >= _top(edges, EDGE_QUANTILE / 100)
    s_in = float(np.abs(laplacian(rainy.mid))[at].mean())
    return float(np.abs(laplacian(target.mid))[at].mean() / s_in) if s_in > 1e-6 else float("nan")


COLOR_ROUNDS = 3  # refits of the trimmed colour fit: the third drops the last rain-lit pixels


def color_score(rainy: View, target: View) -> float:
    """How far the low-passed colours disagree beyond what a grey veil explains, in [0, 1] units.

    A veil (haze, fog, rain accumulation) makes rainy = t * target + (1 - t) * A in every channel with
    the same t <= 1 and a near-grey, bright A. So per channel fit rainy ~= a * target + b (trimmed least
    squares on low-passed pixels, refitted on the 60 % nearest the line: the pixels rain left alone)
    and take the worst of:
      - how far the three channels' lines disagree where the target's pixels are: at its dark and its
        bright end (10th and 90th percentiles), in intensity. A cast or a coloured exposure change moves
        the lines apart there; a grey veil moves them together;
      - a > 1 (the target flatter than its input: no veil does that);
      - an offset b that no veil with A in [0.5, 1.05] gives for that a (an exposure change of the target).
    Channel slopes and offsets are not compared directly: a channel with little range in a small image
    has an ill-determined slope, but its line is well determined where its pixels are (good pairs of
    the judged types, 96-512 px: <= 0.043 here, up to 0.22 for the spreads of slopes and offsets)."""
    t = target.tiny.reshape(-1, 3)
    a, b = trimmed_fit(t, rainy.tiny.reshape(-1, 3), rounds=COLOR_ROUNDS)
    a_mean, b_mean = float(a.mean()), float(b.mean())
    veil = max(0.0, 0.5 * (1 - a_mean) - b_mean, b_mean - 1.05 * (1 - a_mean)) if a_mean <= 1 else abs(b_mean)
    ends = np.percentile(t, (10, 90), axis=0).mean(axis=1)  # the target's dark and bright end, all channels
    lines = a[None, :] * ends[:, None] + b[None, :]          # (end, channel)
    apart = float((lines.max(axis=1) - lines.min(axis=1)).max())
    return float(max(apart, max(0.0, a_mean - 1.0), veil))


JPEG_BLOCK = 8          # the JPEG (DCT) block, pixels of the stored image
MIN_BLOCK_VIEW = 4.0    # blocks narrower than this on `mid` cannot be told from texture: not judged


@lru_cache(maxsize=64)  # a few view sizes per run
def _grid_columns(n_diff: int, px_per_view: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Indices x of the differences d[x] = v[x + 1] - v[x] along one axis of `mid` that straddle the
    8-px block grid of the stored image (its origin at the image's top left, as an encoder lays it),
    and those at least 2 away from every grid line (their second difference does not see the grid)."""
    period = JPEG_BLOCK / px_per_view
    if period < MIN_BLOCK_VIEW:
        return None
    grid = np.round(np.arange(1, int(n_diff / period) + 2) * period).astype(int) - 1
    grid = grid[(grid >= 1) & (grid <= n_diff - 2)]
    x = np.arange(1, n_diff - 1)
    if len(grid) < 2:
        return None
    far = x[np.abs(x[:, None] - grid[None, :]).min(axis=1) >= 2]
    return (grid, far) if len(far) >= len(grid) else None


def _row_median(a: np.ndarray) -> np.ndarray:
    """np.median(a, axis=1) by one partition (~1.5x faster on these small rows)."""
    n = a.shape[1]
    k = n // 2
    if n % 2:
        return np.partition(a, k, axis=1)[:, k]
    part = np.partition(a, (k - 1, k), axis=1)
    return 0.5 * (part[:, k - 1] + part[:, k])


def block_edges(mid: np.ndarray, px_per_view: tuple[float, float]) -> np.ndarray | None:
    """Per axis (across columns, across rows): how much stronger the image bends at the JPEG block grid
    than between grid lines, relative to how much its content bends. The measure is |second
    difference| of `mid`, its median along each line taken at the grid and away from it, each averaged
    over lines; the excess (grid - away) is divided by the away level brought to the stored image's
    pixel spacing (curvature grows with the square of the downscale) plus one grey level. None when the
    blocks are under MIN_BLOCK_VIEW view pixels (stored images over ~2x MID_SIDE on that axis)."""
    out = []
    for axis, scale in ((1, px_per_view[0]), (0, px_per_view[1])):
        d = np.diff(mid, axis=axis)
        d = d if axis == 1 else np.ascontiguousarray(d.T)  # lines as rows: partitions along contiguous memory
        cols = _grid_columns(d.shape[1], float(scale))
        if cols is None:
            return None
        grid, far = cols
        bend = np.abs(d[:, 1:-1] - 0.5 * (d[:, :-2] + d[:, 2:]))  # column j: the difference x = j + 1
        at = float(_row_median(bend[:, grid - 1]).mean())
        away = float(_row_median(bend[:, far - 1]).mean())
        out.append((at - away) / (away / (scale * scale) + 1.0))
    return np.asarray(out)


def jpeg_score(rainy: View, target: View) -> float:
    """JPEG blocking of the target beyond the input's (mean of the two axes of `block_edges`, target
    minus input). A target re-encoded at a low quality shows steps at its 8-px block grid that its
    input does not; a pair stored at one JPEG quality shows them on both sides and scores ~0, and so
    does a pair with no compression. Rain does not follow the grid. NaN (not judged) when the blocks
    are too small on `mid` (see `block_edges`)."""
    h, w = target.mid.shape
    px = (target.size[0] / w, target.size[1] / h)
    t, r = block_edges(target.mid, px), block_edges(rainy.mid, px)
    return float("nan") if t is None or r is None else float(np.mean(t - r))


ORDER = ("no_rain", "unrelated_target", "misaligned", "blurry_target", "jpeg_target", "color_shift")  # first failure names the reject

register(Check("no_rain", "diff_p999", "below", 4.0, "99.9th percentile |input - target|, grey levels", no_rain_score))
register(Check("unrelated_target", "lowpass_structure", "below", 0.35, "local correlation of low-passed images",
               lowpass_structure_score))
register(Check("misaligned", "shift_px", "above", 2.0, "phase-correlation shift, pixels", shift_score))
register(Check("blurry_target", "sharpness_ratio", "below", 0.3, "target / input |Laplacian| at edges", sharpness_score))
register(Check("jpeg_target", "jpeg_blocking", "above", 0.35,
               "JPEG block-grid edges of the target beyond the input's, relative to content", jpeg_score))
# Colour is not judged where the degradation itself changes colour beyond one grey veil: fog (depth-
# varying transmission, a tinted airlight) and night rain (rain lit by coloured lamps, only in the
# input). Good pairs of those types score well above the threshold (benchmarks/RESULTS.md).
register(Check("color_shift", "color_shift", "above", 0.07, "colour disagreement beyond a grey veil", color_score,
               skip_types=frozenset({"fog", "night_streak", "night_drop"})))


def score_pair(rainy: View, target: View, names=ORDER) -> dict[str, float]:
    """{column: score} of the named checks."""
    return {CHECKS.get(n).column: CHECKS.get(n).score(rainy, target) for n in names}
