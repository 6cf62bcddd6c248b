"""UniRain derainer: a Restormer-style U-shaped transformer with asymmetric MoE feed-forwards.

Layout (levels = len(num_blocks), stride = 2**(levels-1)):

    3×3 conv embed ─> encoder level 0 ─down─> level 1 ─down─> ... ─> latent (deepest level)
                                                                        │ up
    output 3×3 conv <─ refinement <─ decoder level 0 <─up─ ... <─ decoder level L-2
    + input (global residual)

Each block is  x + MDTA(LN(x))  then  x + FFN(LN(x))  (Restormer). Down/up sampling is a 3×3 conv with
PixelUnshuffle/PixelShuffle; skips are concatenated and reduced by a 1×1 conv except at level 0, where
the decoder and refinement work on the concatenated 2·dim channels (as Restormer does).

The FFN kind is `encoder_ffn` in the encoder levels and the latent, `decoder_ffn` in the decoder levels
and the refinement. The default is the paper's asymmetric design: Soft-MoE encoder (every expert sees
every pixel, so the features are shared and smooth), Hard-MoE decoder (each pixel picks top-k experts,
so reconstruction specialises per rain type at the cost of k experts only).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from unirain_model.archs import register_arch
from unirain_model.moe import FFN_REGISTRY, FFNLayer, make_ffn


class LayerNorm2d(nn.Module):
    """LayerNorm over channels of a B×C×H×W map (Restormer's `WithBias_LayerNorm`)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias)
        return y.permute(0, 3, 1, 2)


class MDTA(nn.Module):
    """Multi-Dconv-head Transposed Attention: attention across channels, linear in pixels."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w)
                   for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: nn.Module):
        super().__init__()
        self.norm1, self.attn = LayerNorm2d(dim), MDTA(dim, heads)
        self.norm2, self.ffn = LayerNorm2d(dim), ffn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def pad_to_multiple(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Pad bottom/right to a multiple of `stride`: reflect, or replicate when the image is smaller
    than the padding (reflect cannot pad more than size-1)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % stride, (-w) % stride
    if not (ph or pw):
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def _down(dim: int) -> nn.Module:  # dim -> 2·dim, half resolution
    return nn.Sequential(nn.Conv2d(dim, dim // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))


def _up(dim: int) -> nn.Module:  # dim -> dim/2, double resolution
    return nn.Sequential(nn.Conv2d(dim, dim * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))


@register_arch("unirain")
class UniRain(nn.Module):
    """The derainer. Input B×3×H×W in [0, 1], any H and W; output the same shape (not clamped).

    The defaults are `configs/model/unirain.yaml` (the paper's budget, ~128 G MACs at 256×256).

    Args:
        dim: channels at full resolution (level l has dim·2^l).
        num_blocks: transformer blocks per level, the last entry is the latent (deepest) level.
        heads: attention heads per level (must divide that level's channels).
        num_refinement_blocks: blocks after the last decoder level (decoder FFN kind).
        expert_expansion: one expert's hidden width as a multiple of its level's channels.
        num_experts, top_k: experts per MoE layer; experts each pixel runs in a Hard-MoE layer.
        encoder_ffn, decoder_ffn: `soft`, `hard` or `dense` (the ablations).
        dense_expansion: hidden width of a dense FFN; default expert_expansion·top_k (= the active
            width of a hard layer).
    """

    def __init__(self, dim: int = 48, num_blocks: Sequence[int] = (3, 6, 6, 8),
                 heads: Sequence[int] = (1, 2, 4, 8), num_refinement_blocks: int = 2,
                 expert_expansion: float = 1.0, num_experts: int = 4, top_k: int = 2,
                 encoder_ffn: str = "soft", decoder_ffn: str = "hard",
                 dense_expansion: float | None = None):
        super().__init__()
        num_blocks, heads = list(num_blocks), list(heads)
        for key, kind in (("encoder_ffn", encoder_ffn), ("decoder_ffn", decoder_ffn)):
            if kind not in FFN_REGISTRY:
                raise ValueError(f"{key}: {FFN_REGISTRY.unknown_message(kind)}")
        if len(num_blocks) < 1 or len(heads) != len(num_blocks):
            raise ValueError(f"heads ({heads}) and num_blocks ({num_blocks}) need the same length >= 1")
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={num_experts}], got {top_k}")
        levels = len(num_blocks)
        dims = [dim * 2**lvl for lvl in range(levels)]
        for lvl, (d, h) in enumerate(zip(dims, heads)):
            if d % h:
                raise ValueError(f"heads[{lvl}]={h} does not divide the level's {d} channels")
        self.stride = 2 ** (levels - 1)

        def stage(d: int, h: int, n: int, kind: str) -> nn.Sequential:
            hidden = max(1, int(d * expert_expansion))
            dense_hidden = int(d * dense_expansion) if dense_expansion else None
            return nn.Sequential(*[
                TransformerBlock(d, h, make_ffn(kind, d, hidden, num_experts, top_k, dense_hidden))
                for _ in range(n)])

        self.embed = nn.Conv2d(3, dim, 3, padding=1, bias=False)
        self.encoders = nn.ModuleList(stage(dims[i], heads[i], num_blocks[i], encoder_ffn)
                                      for i in range(levels - 1))
        self.downs = nn.ModuleList(_down(dims[i]) for i in range(levels - 1))
        self.latent = stage(dims[-1], heads[-1], num_blocks[-1], encoder_ffn)
        # Decoder lists are indexed by level (0 = full resolution) and run from deep to shallow.
        self.ups = nn.ModuleList(_up(dims[i + 1]) for i in range(levels - 1))
        self.reduces = nn.ModuleList(
            nn.Identity() if i == 0 else nn.Conv2d(2 * dims[i], dims[i], 1, bias=False)
            for i in range(levels - 1))
        self.decoders = nn.ModuleList(
            stage(2 * dims[0] if i == 0 else dims[i], heads[i], num_blocks[i], decoder_ffn)
            for i in range(levels - 1))
        out_dim = 2 * dims[0] if levels > 1 else dims[0]
        self.refinement = stage(out_dim, heads[0], num_refinement_blocks, decoder_ffn)
        self.output = nn.Conv2d(out_dim, 3, 3, padding=1, bias=False)
        # Zero: the network starts as the identity (out = x) and learns only the rain correction. With
        # the default init f(x) is noise 5x larger than the rain itself (mean |f| 0.12 vs L1 0.023 on
        # the synthetic set) and short runs spend their budget unlearning it (docs/training.md, "Why it
        # did not learn, and the fix"). The inner layers get gradient from the second step on.
        nn.init.zeros_(self.output.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # channels_last: MoE layers see their pixels as (N, C) tokens without a copy.
        padded = self._pad(x).contiguous(memory_format=torch.channels_last)
        feat = self.embed(padded)
        skips = []
        for enc, down in zip(self.encoders, self.downs):
            feat = enc(feat)
            skips.append(feat)
            feat = down(feat)
        feat = self.latent(feat)
        for lvl in reversed(range(len(self.decoders))):
            feat = torch.cat([self.ups[lvl](feat), skips[lvl]], dim=1)
            feat = self.decoders[lvl](self.reduces[lvl](feat))
        out = self.output(self.refinement(feat)) + padded
        return out[..., :h, :w].contiguous()

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        return pad_to_multiple(x, self.stride)

    def moe_layers(self) -> dict[str, FFNLayer]:
        """Every FFN layer (dense ones included) by module name."""
        return {name: m for name, m in self.named_modules() if isinstance(m, FFNLayer)}

    def aux_loss(self) -> torch.Tensor:
        """Summed load-balancing loss of the Hard-MoE layers in the last forward (0 if none)."""
        losses = [loss for m in self.moe_layers().values() if (loss := m.aux_loss()) is not None]
        if not losses:
            return torch.zeros((), device=self.output.weight.device)
        return torch.stack(losses).sum()

    def routing(self) -> dict[str, torch.Tensor]:
        """Layer name -> last routing weights (B×E×H×W, detached; zeros where a hard layer did
        not route). Dense layers have no router and are left out."""
        return {name: m.last_routing for name, m in self.moe_layers().items()
                if m.kind != "dense" and m.last_routing is not None}

    def set_record_routing(self, flag: bool) -> None:
        """Keep (True, default) or skip copies of the routing weights, e.g. for huge inputs."""
        for m in self.moe_layers().values():
            m.record_routing = flag
            if not flag:
                m.last_routing = None
