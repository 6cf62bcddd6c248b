"""Per-rain-type loss reweighting: the Convergence Balancer (CoBa) and a uniform baseline.

CoBa follows the UniRain authors' released training code (`train.py`, `CoBaStatus` plus the
weight post-processing in `on_validation_epoch_end`), which in turn adapts CoBa from MFTCoder.
The paper calls its three signals TBS (relative convergence, "RCS" in the code), TSS (absolute
convergence, "ACS") and AF (divergence factor, "DF"). Each `update()` receives the per-type
validation L1 losses of one evaluation and returns the weights to train with until the next one.

Arithmetic is float64 numpy: the weights are a handful of numbers per evaluation, and numpy keeps
this module free of devices and dtypes. Histories are trimmed to the last `history` entries, which
is all the update ever reads, so the state stays small however long training runs.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from data_manifests.registry import Registry

REWEIGHTERS: Registry[type] = Registry("reweighting kind")


def register_reweighter(name: str) -> Callable[[type], type]:
    return REWEIGHTERS.register(name)


def build_reweighter(kind: str, num_types: int, **kwargs: Any):
    """The reweighter `kind` (RegistryError, a ValueError, naming the known kinds if unknown)."""
    return REWEIGHTERS.get(kind)(num_types=num_types, **kwargs)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - np.max(x))
    return z / z.sum()


def fit_slope(y: np.ndarray) -> float:
    """Least-squares slope of y against 0..L-1; 0 for fewer than two points, clamped to ±1e3."""
    y = np.asarray(y, dtype=np.float64)
    n = y.shape[0]
    if n < 2:
        return 0.0
    x = np.arange(n, dtype=np.float64)
    xc = x - x.mean()
    slope = float(np.dot(xc, y - y.mean()) / np.dot(xc, xc))
    if not np.isfinite(slope):
        return 0.0
    return float(np.clip(slope, -1e3, 1e3))


@register_reweighter("uniform")
class Uniform:
    """Equal weights forever: the ablation without reweighting."""

    def __init__(self, num_types: int = 4, **_: Any) -> None:
        if num_types < 1:
            raise ValueError("num_types must be at least 1")
        self.num_types = num_types
        self.num_updates = 0
        self.weights = np.full(num_types, 1.0 / num_types)
        self.last_tbs = self.last_tss = None
        self.last_af = None

    def update(self, val_losses) -> np.ndarray:
        losses = np.asarray(val_losses, dtype=np.float64)
        if losses.shape != (self.num_types,):
            raise ValueError(f"expected {self.num_types} losses, got shape {losses.shape}")
        self.num_updates += 1
        return self.weights.copy()

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "uniform", "num_types": self.num_types, "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["num_types"]) != self.num_types:
            raise ValueError(f"state is for {state['num_types']} types, this reweighter has {self.num_types}")
        self.num_updates = int(state["num_updates"])


@register_reweighter("coba")
class CoBa:
    """Convergence Balancer over `num_types` validation losses.

    update(losses):
      append losses; during the first `warmup_evals` calls return uniform weights and do nothing else;
      then with W = min(history, T) over the T losses so far:
        s_i    = slope of type i's last W losses                     (per-type convergence speed)
        TBS    = softmax(N * s / (sum|s| + 1e-8))                     (favours types that converge slowest)
        S      = last K <= history per-type slopes (s appended first)
        TSS    = softmax_i(-K * S[i, -1] / (sum_k |S[i, k]| + 1e-8))  (favours types that converge fast
                                                                        relative to their own past)
        sigma  = slope of the per-step maximum loss, appended to a history; last K' entries
        AF     = softmax(tau * (-K' * sigma / (sum|sigma| + 1e-8)))[-1]
        w      = softmax(N * (AF * TBS + (1 - AF) * TSS))
        weight = softmax(N * w) * (1 - min_weight * N) + min_weight
    The second softmax and the floor are applied in the authors' training step, not in their
    CoBaStatus; both are kept so the weights are identical. The floor keeps every type at least
    `min_weight` so no type starves.
    """

    def __init__(
        self,
        num_types: int = 4,
        history: int = 10,
        tau: float = 5.0,
        warmup_evals: int = 20,
        min_weight: float = 0.1,
    ) -> None:
        if num_types < 1:
            raise ValueError("num_types must be at least 1")
        if history < 1:
            raise ValueError("history must be at least 1")
        if warmup_evals < 0:
            raise ValueError("warmup_evals must be >= 0")
        if not 0.0 <= min_weight * num_types <= 1.0:
            raise ValueError(f"min_weight * num_types must lie in [0, 1], got {min_weight} * {num_types}")
        self.num_types = num_types
        self.history = history
        self.tau = float(tau)
        self.warmup_evals = warmup_evals
        self.min_weight = float(min_weight)
        self.num_updates = 0
        self.loss_history = np.zeros((num_types, 0))  # [N, <=history]
        self.slope_history = np.zeros((num_types, 0))  # [N, <=history]
        self.total_slope_history = np.zeros(0)  # [<=history]
        self.weights = np.full(num_types, 1.0 / num_types)
        # The last update's signals, for logging (None until warm-up ends).
        self.last_tbs: np.ndarray | None = None
        self.last_tss: np.ndarray | None = None
        self.last_af: float | None = None

    def update(self, val_losses) -> np.ndarray:
        losses = np.asarray(val_losses, dtype=np.float64).reshape(-1)
        if losses.shape != (self.num_types,):
            raise ValueError(f"expected {self.num_types} losses, got shape {losses.shape}")
        if not np.all(np.isfinite(losses)):
            raise ValueError(f"validation losses must be finite, got {losses.tolist()}")
        self.loss_history = np.concatenate([self.loss_history, losses[:, None]], axis=1)[:, -self.history :]
        self.num_updates += 1
        if self.num_updates <= self.warmup_evals:
            return self.weights.copy()

        n = self.num_types
        window = self.loss_history  # already the last W = min(history, T) losses
        slopes = np.array([fit_slope(window[i]) for i in range(n)])
        tbs = _softmax(n * slopes / (np.abs(slopes).sum() + 1e-8))

        self.slope_history = np.concatenate([self.slope_history, slopes[:, None]], axis=1)[:, -self.history :]
        s = self.slope_history
        k = s.shape[1]
        tss = _softmax(-k * s[:, -1] / (np.abs(s).sum(axis=1) + 1e-8))

        total = fit_slope(window.max(axis=0))
        self.total_slope_history = np.append(self.total_slope_history, total)[-self.history :]
        sig = self.total_slope_history
        kt = sig.shape[0]
        af = float(_softmax(self.tau * (-kt * sig / (np.abs(sig).sum() + 1e-8)))[-1])

        w = _softmax(n * (af * tbs + (1.0 - af) * tss))
        weights = _softmax(n * w) * (1.0 - self.min_weight * n) + self.min_weight
        self.weights = weights
        self.last_tbs, self.last_tss, self.last_af = tbs, tss, af
        return weights.copy()

    def state_dict(self) -> dict[str, Any]:
        """Plain Python lists and numbers: loadable with `torch.load(weights_only=True)` and JSON."""

        def opt(a):
            return None if a is None else np.asarray(a).tolist()

        return {
            "kind": "coba",
            "num_types": self.num_types,
            "history": self.history,
            "num_updates": self.num_updates,
            "loss_history": self.loss_history.tolist(),
            "slope_history": self.slope_history.tolist(),
            "total_slope_history": self.total_slope_history.tolist(),
            "weights": self.weights.tolist(),
            "last_tbs": opt(self.last_tbs),
            "last_tss": opt(self.last_tss),
            "last_af": self.last_af,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["num_types"]) != self.num_types:
            raise ValueError(f"state is for {state['num_types']} types, this reweighter has {self.num_types}")
        n = self.num_types
        self.num_updates = int(state["num_updates"])
        self.loss_history = np.asarray(state["loss_history"], dtype=np.float64).reshape(n, -1)[:, -self.history :]
        self.slope_history = np.asarray(state["slope_history"], dtype=np.float64).reshape(n, -1)[:, -self.history :]
        self.total_slope_history = np.asarray(state["total_slope_history"], dtype=np.float64).reshape(-1)[
            -self.history :
        ]
        self.weights = np.asarray(state["weights"], dtype=np.float64)
        self.last_tbs = None if state.get("last_tbs") is None else np.asarray(state["last_tbs"], dtype=np.float64)
        self.last_tss = None if state.get("last_tss") is None else np.asarray(state["last_tss"], dtype=np.float64)
        self.last_af = None if state.get("last_af") is None else float(state["last_af"])


def weighted_type_loss(per_sample_l1, type_idx, weights):
    """Σ_i w_i · L1_i · n_i / B over the types present in the batch.

    L1_i is the mean L1 of the n_i samples of type i; with equal-sized samples
    w_i · L1_i · n_i / B = Σ_{b of type i} w_i · l1_b / B, so the whole sum is one gather. This is
    the authors' training loss (their per-type `nn.L1Loss` on the masked batch times `n_i / B`).
    `per_sample_l1`: tensor [B] (mean absolute error of each sample); `type_idx`: long tensor [B];
    `weights`: sequence or tensor [N].
    """
    import torch

    w = torch.as_tensor(weights, dtype=per_sample_l1.dtype, device=per_sample_l1.device)
    return (w[type_idx] * per_sample_l1).sum() / per_sample_l1.shape[0]
