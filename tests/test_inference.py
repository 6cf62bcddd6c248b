"""Tiled inference: coverage, seam-free blending, bounded tile batches, sizes preserved."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data as skdata
from torch import nn

from unirain_model.archs import build_model
from unirain_model.inference import derain_array, tile_starts, to_uint8
from unirain_model.metrics import psnr

TINY_MODEL = {"type": "unirain", "dim": 8, "num_blocks": [1, 1], "heads": [1, 1], "num_refinement_blocks": 1,
              "expert_expansion": 1.0, "num_experts": 2, "top_k": 1}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("size,tile,overlap", [(512, 256, 32), (300, 256, 32), (257, 64, 16), (64, 64, 8), (40, 64, 8)])
def test_tiles_cover_with_overlap(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    t = min(tile, size)
    covered = np.zeros(size, int)
    for s in starts:
        covered[s : s + t] += 1
    assert covered.min() >= 1 and starts[0] == 0 and starts[-1] + t == size
    assert all(b - a <= t - overlap for a, b in zip(starts, starts[1:]))  # neighbours overlap >= overlap


class _Recorder(nn.Module):
    """Wraps a model and records the input shape of every forward pass."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.shapes = inner, []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return self.inner(x)


def test_blending_is_seamless_for_a_local_network():
    # A network that only sees a 7×7 neighbourhood gives the same pixels in a tile as in the whole
    # image (away from tile borders), so any difference is the tiling's own error: seams would show.
    torch.manual_seed(0)
    local = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.GELU(), nn.Conv2d(16, 16, 3, padding=1), nn.GELU(),
                          nn.Conv2d(16, 3, 3, padding=1))
    img = skdata.astronaut()
    rec = _Recorder(local).eval()
    whole = derain_array(rec, img, tile=None)
    rec.shapes.clear()
    tiled = derain_array(rec, img, tile=256, overlap=32, batch=4)
    assert psnr(to_uint8(tiled), to_uint8(whole)) >= 60
    # memory bound: the network never saw more than `batch` tiles of 256² at once
    assert rec.shapes and all(s[0] <= 4 and s[2:] == (256, 256) for s in rec.shapes)
    assert sum(s[0] for s in rec.shapes) == 9  # 3×3 tiles on 512²


def _streaks(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cheap synthetic rain: sparse bright points smeared into vertical streaks."""
    from scipy.ndimage import uniform_filter1d

    seeds = (rng.random(img.shape[:2]) < 0.01).astype(np.float32)
    streaks = np.clip(uniform_filter1d(seeds, 15, axis=0) * 8, 0, 1)[..., None]
    return np.clip(img.astype(np.float32) + 120 * streaks, 0, 255).astype(np.uint8)


def test_tiled_equals_whole_on_512_with_a_trained_derainer(tmp_path):
    # The derainer's transposed (channel) attention pools statistics over its whole input, so a tile
    # and the whole image differ a little. With random weights (a large random residual) that gap is
    # 36-40 dB; a network trained even briefly is near identity plus a rain correction and lands well
    # above 40 dB (45-50 after 60 iterations). So the check trains the tiny model first, for real.
    import warnings

    from PIL import Image

    from unirain_model.checkpoint import load_model
    from unirain_model.config import parse_train_config
    from unirain_model.trainer import train

    rng = np.random.default_rng(0)
    for k, photo in enumerate((skdata.chelsea(), skdata.coffee())):  # training photos; the test image is another
        for i in range(4):
            y, x = rng.integers(0, photo.shape[0] - 96), rng.integers(0, photo.shape[1] - 96)
            clean = photo[y : y + 96, x : x + 96]
            for sub, img in (("input", _streaks(clean, rng)), ("target", clean)):
                folder = tmp_path / "train" / ("drs", "nrs")[k] / sub
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(folder / f"{i}.png")
    cfg = parse_train_config(dict(model=TINY_MODEL, iters=40, batch_size=4, crop=32, lr=2e-3, warmup_iters=5,
                                  eval_every=40, ckpt_every=40, val_fraction=0.2, val_crop=32, num_workers=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(cfg, tmp_path / "run", tmp_path / "train", show_progress_bar=False)
    model, _ = load_model(result.checkpoint)
    img = _streaks(skdata.astronaut(), rng)
    whole = to_uint8(derain_array(model, img, tile=None))
    tiled = to_uint8(derain_array(model, img, tile=256, overlap=32))
    assert whole.shape == tiled.shape == img.shape == (512, 512, 3)
    assert psnr(tiled, whole) >= 40


def test_odd_sizes_and_tiny_images_keep_their_size():
    torch.manual_seed(0)
    model = build_model(TINY_MODEL).eval()
    rng = np.random.default_rng(0)
    for h, w in [(37, 50), (5, 9), (70, 41)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        assert derain_array(model, img, tile=32, overlap=8).shape == (h, w, 3)
        assert derain_array(model, img, tile=None).shape == (h, w, 3)
    with pytest.raises(ValueError, match="overlap"):
        derain_array(model, rng.integers(0, 256, (80, 80, 3), dtype=np.uint8), tile=32, overlap=32)
