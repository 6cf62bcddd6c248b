"""CoBa contract: warm-up, a hand-computed update, the authors' algorithm on a longer run, floors, state."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unirain_model.reweighting import REWEIGHTERS, CoBa, Uniform, build_reweighter, weighted_type_loss


def test_warmup_is_uniform_and_computes_nothing():
    coba = CoBa(num_types=4, warmup_evals=3)
    for losses in ([0.5, 0.4, 0.3, 0.2], [0.4, 0.4, 0.1, 0.2], [0.1, 0.4, 0.3, 0.0]):
        w = coba.update(losses)
        assert w.dtype == np.float64
        np.testing.assert_array_equal(w, np.full(4, 0.25))
    assert coba.last_tbs is None and coba.last_af is None
    assert coba.slope_history.shape == (4, 0) and coba.total_slope_history.size == 0
    w = coba.update([0.05, 0.4, 0.3, 0.2])
    assert coba.last_tbs is not None and not np.allclose(w, 0.25)


def test_hand_computed_first_update():
    coba = CoBa(num_types=2, history=3, tau=5.0, warmup_evals=2, min_weight=0.1)
    coba.update([1.0, 2.0])
    coba.update([0.8, 1.9])
    w = coba.update([0.7, 1.85])
    # slopes over x = 0, 1, 2: (y2 - y0) / 2
    s0, s1 = (0.7 - 1.0) / 2, (1.85 - 2.0) / 2
    z = abs(s0) + abs(s1) + 1e-8
    l0, l1 = 2 * s0 / z, 2 * s1 / z
    tbs = [math.exp(l0) / (math.exp(l0) + math.exp(l1)), math.exp(l1) / (math.exp(l0) + math.exp(l1))]
    # one slope column: TSS logits -1 * s_i / (|s_i| + 1e-8)
    t0, t1 = -s0 / (abs(s0) + 1e-8), -s1 / (abs(s1) + 1e-8)
    tss = [math.exp(t0) / (math.exp(t0) + math.exp(t1)), math.exp(t1) / (math.exp(t0) + math.exp(t1))]
    af = 1.0  # softmax over a single total slope
    m = [2 * (af * tbs[i] + (1 - af) * tss[i]) for i in range(2)]
    wv = [math.exp(m[i]) / (math.exp(m[0]) + math.exp(m[1])) for i in range(2)]
    f = [math.exp(2 * wv[i]) / (math.exp(2 * wv[0]) + math.exp(2 * wv[1])) for i in range(2)]
    want = [f[i] * (1 - 0.1 * 2) + 0.1 for i in range(2)]
    np.testing.assert_allclose(w, want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(w, [0.379507, 0.620493], atol=1e-5)  # worked on paper
    np.testing.assert_allclose(coba.last_tbs, tbs, atol=1e-12)
    np.testing.assert_allclose(coba.last_tss, tss, atol=1e-12)
    assert coba.last_af == pytest.approx(1.0)
    assert w.sum() == pytest.approx(1.0, abs=1e-15)


class _AuthorsCoBa:
    """The UniRain authors' CoBaStatus and weight post-processing, transcribed in torch."""

    def __init__(self, n, history, tau, warmup, min_weight):
        self.n, self.h, self.tau, self.warmup, self.mw = n, history, tau, warmup, min_weight
        self.loss = self.slopes = self.total = None
        self.epoch = 0
        self.weights = torch.full((n,), 1.0 / n, dtype=torch.float64)

    def fit(self, y):
        if y.shape[0] < 2:
            return torch.tensor(0.0, dtype=torch.float64)
        x = torch.arange(y.shape[0], dtype=torch.float64)
        X = torch.stack([x, torch.ones_like(x)], 1)
        return torch.linalg.solve(X.T @ X, X.T @ y)[0].clamp(-1e3, 1e3)

    def step(self, losses):
        v = torch.tensor(losses, dtype=torch.float64)
        self.loss = v[:, None] if self.loss is None else torch.cat([self.loss, v[:, None]], 1)
        if self.epoch >= self.warmup:
            win = self.loss[:, -min(self.h, self.loss.shape[1]) :]
            s = torch.stack([self.fit(win[i]) for i in range(self.n)])
            rcs = F.softmax(self.n * s / (s.abs().sum() + 1e-8), -1)
            self.slopes = s[:, None] if self.slopes is None else torch.cat([self.slopes, s[:, None]], 1)
            k = min(self.h, self.slopes.shape[1])
            sw = self.slopes[:, -k:]
            acs = F.softmax((-k * sw / (sw.abs().sum(1, keepdim=True) + 1e-8))[:, -1], -1)
            t = self.fit(win.max(0).values)
            self.total = t[None] if self.total is None else torch.cat([self.total, t[None]])
            kt = min(self.h, self.total.shape[0])
            tw = self.total[-kt:]
            df = F.softmax(-kt * tw / (tw.abs().sum() + 1e-8) * self.tau, -1)[-1]
            w = F.softmax((df * rcs + (1 - df) * acs) * self.n, -1)
            self.weights = F.softmax(w * self.n, -1) * (1 - self.mw * self.n) + self.mw
        self.epoch += 1
        return self.weights.numpy()


def test_matches_authors_algorithm_over_a_long_run():
    rng = np.random.default_rng(3)
    ref = _AuthorsCoBa(4, history=5, tau=5.0, warmup=3, min_weight=0.1)
    coba = CoBa(num_types=4, history=5, tau=5.0, warmup_evals=3, min_weight=0.1)
    base = np.array([0.3, 0.2, 0.5, 0.4])
    rates = np.array([0.02, 0.05, 0.01, 0.03])
    for t in range(25):
        losses = base * np.exp(-rates * t) + rng.normal(0, 0.01, 4)
        np.testing.assert_allclose(coba.update(losses), ref.step(losses.tolist()), rtol=0, atol=1e-10)
    assert coba.loss_history.shape == (4, 5)  # trimmed to the window the update reads


def test_floor_and_sum_under_extreme_losses():
    coba = CoBa(num_types=4, warmup_evals=0, min_weight=0.1)
    for t in range(12):
        w = coba.update([1e3 * (t + 1), 1e-6, 5.0 / (t + 1), 0.0])
        assert w.sum() == pytest.approx(1.0, abs=1e-12)
        assert np.all(w >= 0.1 - 1e-12)


def test_state_round_trip_continues_identically():
    rng = np.random.default_rng(0)
    seq = rng.uniform(0.05, 0.5, (15, 4))
    a = CoBa(history=4, warmup_evals=2)
    for losses in seq[:8]:
        a.update(losses)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = CoBa(history=4, warmup_evals=2)
    b.load_state_dict(torch.load(buf, weights_only=True))
    for losses in seq[8:]:
        np.testing.assert_array_equal(a.update(losses), b.update(losses))
    with pytest.raises(ValueError, match="types"):
        CoBa(num_types=3).load_state_dict(a.state_dict())


def test_bad_arguments_and_registry():
    with pytest.raises(ValueError):
        CoBa(num_types=4, min_weight=0.3)  # floors would exceed 1
    with pytest.raises(ValueError, match="expected 4"):
        CoBa().update([0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        CoBa().update([0.1, float("nan"), 0.1, 0.1])
    assert set(REWEIGHTERS) >= {"coba", "uniform"}
    u = build_reweighter("uniform", 3)
    assert isinstance(u, Uniform)
    np.testing.assert_array_equal(u.update([3.0, 0.1, 1.0]), np.full(3, 1 / 3))
    with pytest.raises(ValueError, match="unknown reweighting kind 'nope'"):
        build_reweighter("nope", 4)
    from unirain_model.reweighting import register_reweighter

    with pytest.raises(ValueError, match="reweighting kind 'coba' is already registered"):
        register_reweighter("coba")(Uniform)


def test_weighted_type_loss_equals_per_type_formula():
    torch.manual_seed(0)
    pred, target = torch.rand(6, 3, 8, 8), torch.rand(6, 3, 8, 8)
    types = torch.tensor([0, 2, 2, 3, 0, 2])  # type 1 absent
    w = [0.4, 0.3, 0.2, 0.1]
    per_sample = (pred - target).abs().flatten(1).mean(1)
    got = weighted_type_loss(per_sample, types, w)
    want = sum(
        w[i] * F.l1_loss(pred[types == i], target[types == i]) * (types == i).sum() / 6
        for i in range(4)
        if (types == i).any()
    )
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
