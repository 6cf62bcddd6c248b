"""Feed-forward layers of the derainer: dense, Soft-MoE and Hard-MoE.

All three share one expert design so the ablations compare *routing* only:

    x ──dwconv3×3 (shared)──> tokens ──router──> weights over experts
                                 └──expert_e: Linear(C→2h) → GELU(a)·b → Linear(h→C)

The expert is Restormer's gated-dconv FFN (GDFN) split in two: its depth-wise 3×3 conv needs a
token's neighbours, so it cannot run on a gathered subset of tokens. It moves in front of the router
(on C channels, shared by all experts, giving the router and experts 3×3 context) and each expert
keeps GDFN's gated point-wise part. Per-token experts are what make real Hard-MoE routing possible:
the tokens routed to an expert are gathered, only that expert runs on them, and the outputs are
scattered back, so compute grows with `top_k`, not with `num_experts`.

Expert weights are stacked tensors (E, C, 2h) / (E, h, C), so every expert always owns a slice of a
parameter that receives a gradient (zeros where no token chose it): DDP needs no
`find_unused_parameters`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from data_manifests.registry import Registry

# FFN kind (`encoder_ffn` / `decoder_ffn` in a model config) -> layer class. Each class builds itself
# from the block's common arguments with `from_block(...)`.
FFN_REGISTRY: Registry[type["FFNLayer"]] = Registry("FFN kind")


class Experts(nn.Module):
    """`num_experts` gated point-wise MLPs (C → 2h → gate → h → C) on tokens (N, C)."""

    def __init__(self, dim: int, hidden: int, num_experts: int):
        super().__init__()
        self.dim, self.hidden, self.num_experts = dim, hidden, num_experts
        self.w_in = nn.Parameter(torch.empty(num_experts, dim, 2 * hidden))
        self.w_out = nn.Parameter(torch.empty(num_experts, hidden, dim))
        # nn.Linear's default init, per expert: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        nn.init.uniform_(self.w_in, -1 / math.sqrt(dim), 1 / math.sqrt(dim))
        nn.init.uniform_(self.w_out, -1 / math.sqrt(hidden), 1 / math.sqrt(hidden))

    def run(self, e: int, tokens: torch.Tensor) -> torch.Tensor:
        """Expert `e` on tokens (n, C) -> (n, C)."""
        a, b = (tokens @ self.w_in[e]).chunk(2, dim=-1)
        return (F.gelu(a) * b) @ self.w_out[e]

    def run_mixed(self, tokens: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Every expert on every token, mixed by `weights` (N, E): (N, C) -> (N, C).

        Two GEMMs for all experts: the input projections side by side (C -> E·2h), and the mix folded
        into the output GEMM, since Σ_e w_e·(g_e @ W_e) = [w_1·g_1, ..., w_E·g_E] @ [W_1; ...; W_E].
        """
        e, c, h = self.num_experts, self.dim, self.hidden
        w_in = self.w_in.permute(1, 0, 2).reshape(c, e * 2 * h)
        a, b = (tokens @ w_in).view(-1, e, 2 * h).chunk(2, dim=-1)
        gated = F.gelu(a) * b * weights.unsqueeze(-1).to(a.dtype)  # (N, E, h)
        return gated.reshape(-1, e * h) @ self.w_out.reshape(e * h, c)


def _to_tokens(x: torch.Tensor) -> torch.Tensor:
    # A view, no copy, when x is channels_last (the derainer runs channels_last for this reason).
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _to_map(tokens: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    b, _, h, w = shape
    return tokens.reshape(b, h, w, -1).permute(0, 3, 1, 2)


class FFNLayer(nn.Module):
    """Shared depth-wise conv + experts; subclasses decide how tokens are routed."""

    kind = "base"

    def __init__(self, dim: int, hidden: int, num_experts: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False)
        self.experts = Experts(dim, hidden, num_experts)
        self.num_experts = num_experts
        self.record_routing = True  # off for huge inputs where a (B, E, H, W) copy is unwanted
        self.last_routing: torch.Tensor | None = None  # (B, E, H, W), detached, 0 where unchosen

    def aux_loss(self) -> torch.Tensor | None:
        return None

    def active_experts(self) -> int:
        """Experts each token runs through (what its compute grows with)."""
        raise NotImplementedError

    @classmethod
    def from_block(cls, dim: int, hidden: int, num_experts: int, top_k: int,
                   dense_hidden: int | None = None) -> "FFNLayer":
        """The layer of one block from the model's common FFN arguments."""
        raise NotImplementedError

    def _record(self, weights: torch.Tensor, shape: torch.Size) -> None:
        if self.record_routing:
            self.last_routing = _to_map(weights.detach(), shape)


@FFN_REGISTRY.register("dense")
class DenseFFN(FFNLayer):
    """One expert, no router: the dense baseline of the ablations."""

    kind = "dense"

    def __init__(self, dim: int, hidden: int):
        super().__init__(dim, hidden, 1)

    def active_experts(self) -> int:
        return 1

    @classmethod
    def from_block(cls, dim, hidden, num_experts, top_k, dense_hidden=None):
        # As wide as the top_k experts a hard layer runs, unless dense_hidden says otherwise.
        return cls(dim, dense_hidden or hidden * top_k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x)
        return _to_map(self.experts.run(0, _to_tokens(y)), y.shape)


@FFN_REGISTRY.register("soft")
class SoftMoEFFN(FFNLayer):
    """Router softmax over all experts; every expert runs on every token; outputs mixed."""

    kind = "soft"

    def __init__(self, dim: int, hidden: int, num_experts: int):
        super().__init__(dim, hidden, num_experts)
        self.router = nn.Linear(dim, num_experts, bias=False)

    def active_experts(self) -> int:
        return self.num_experts

    @classmethod
    def from_block(cls, dim, hidden, num_experts, top_k, dense_hidden=None):
        return cls(dim, hidden, num_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x)
        tokens = _to_tokens(y)
        weights = torch.softmax(self.router(tokens), dim=-1)  # (N, E)
        self._record(weights, y.shape)
        return _to_map(self.experts.run_mixed(tokens, weights), y.shape)


@FFN_REGISTRY.register("hard")
class HardMoEFFN(FFNLayer):
    """Top-k routing per token (pixel); only the chosen experts compute (dropless, no capacity cap).

    Weights are the router's softmax renormalised over the chosen k. The auxiliary loss is the
    Switch/GShard load-balancing term  E · Σ_e f_e · P_e  (f_e: share of the N·k assignments that went
    to expert e, P_e: mean router probability of e); it is 1 under perfectly balanced routing.
    """

    kind = "hard"

    def __init__(self, dim: int, hidden: int, num_experts: int, top_k: int = 2):
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={num_experts}], got {top_k}")
        super().__init__(dim, hidden, num_experts)
        self.top_k = top_k
        self.router = nn.Linear(dim, num_experts, bias=False)
        self._aux: torch.Tensor | None = None

    def active_experts(self) -> int:
        return self.top_k

    @classmethod
    def from_block(cls, dim, hidden, num_experts, top_k, dense_hidden=None):
        return cls(dim, hidden, num_experts, top_k)

    def aux_loss(self) -> torch.Tensor | None:
        return self._aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x)
        tokens = _to_tokens(y)
        n, k, e_count = tokens.shape[0], self.top_k, self.num_experts
        probs = torch.softmax(self.router(tokens), dim=-1)  # (N, E)
        top_w, top_i = probs.topk(k, dim=-1)  # (N, k)
        top_w = top_w / top_w.sum(dim=-1, keepdim=True)

        # Group the N·k (token, expert) assignments by expert: one sort, then contiguous slices.
        flat_e = top_i.reshape(-1)
        order = torch.argsort(flat_e, stable=True)
        token_of = order // k
        if flat_e.is_meta:
            # Shape-only pass (MAC counting on the meta device): routing is unknown, and since the
            # experts are the same size, any split of the N·k assignments costs the same.
            counts = [n * k // e_count + (e < n * k % e_count) for e in range(e_count)]
            counts_t = torch.tensor(counts, device=flat_e.device)
        else:
            counts_t = torch.bincount(flat_e, minlength=e_count)
            counts = counts_t.tolist()
        gathered = tokens.index_select(0, token_of)
        # Every expert runs, possibly on 0 tokens, so each slice of the stacked weights stays in the
        # graph (a zero gradient, not None) and DDP sees all parameters used.
        outs = [self.experts.run(e, chunk) for e, chunk in enumerate(gathered.split(counts))]
        weighted = torch.cat(outs) * top_w.reshape(-1)[order].unsqueeze(-1)
        mixed = weighted.new_zeros(tokens.shape).index_add_(0, token_of, weighted)

        frac = counts_t.to(probs.dtype) / max(n * k, 1)
        self._aux = e_count * (frac * probs.mean(dim=0)).sum()
        if self.record_routing:
            dense = probs.new_zeros(probs.shape).scatter_(1, top_i, top_w)
            self._record(dense, y.shape)
        return _to_map(mixed, y.shape)


def make_ffn(kind: str, dim: int, hidden: int, num_experts: int, top_k: int,
             dense_hidden: int | None = None) -> FFNLayer:
    """The FFN of one block by kind (a name in FFN_REGISTRY); `hidden` is one expert's width.

    A dense layer defaults to `hidden * top_k`: as wide as the k experts a hard layer runs.
    """
    return FFN_REGISTRY.get(kind).from_block(dim, hidden, num_experts, top_k, dense_hidden)
