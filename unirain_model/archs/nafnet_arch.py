"""NAFNet-style baseline: a known, simple design to measure the derainer against (Chen et al., "Simple
Baselines for Image Restoration", ECCV 2022; written here from the paper's description, not copied).

    intro 3×3 conv ─> [NAFBlocks ─down]×L ─> middle NAFBlocks ─> [up ─(+skip)─ NAFBlocks]×L ─> ending 3×3
    + input (global residual)

A NAFBlock is two residual branches with no non-linear activation:
    y = x + β · conv1×1(SCA(SimpleGate(dwconv3×3(conv1×1(LN(x))))))
    z = y + γ · conv1×1(SimpleGate(conv1×1(LN(y))))
SimpleGate splits the channels in two halves and multiplies them; SCA (simplified channel attention)
scales channels by a 1×1 conv of their global average. β and γ start at zero, so every block starts as
the identity. Down-sampling is a stride-2 2×2 conv (channels ×2), up-sampling a 1×1 conv + PixelShuffle
(channels ÷2); skips are added, not concatenated.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from unirain_model.archs import register_arch
from unirain_model.archs.unirain_arch import LayerNorm2d, pad_to_multiple


class SimpleGate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    def __init__(self, c: int, dw_expand: int = 2, ffn_expand: int = 2):
        super().__init__()
        dw = c * dw_expand
        self.norm1 = LayerNorm2d(c)
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.sca = nn.Conv2d(dw // 2, dw // 2, 1)
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        self.norm2 = LayerNorm2d(c)
        self.conv4 = nn.Conv2d(c, c * ffn_expand, 1)
        self.conv5 = nn.Conv2d(c * ffn_expand // 2, c, 1)
        self.gate = SimpleGate()
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.gate(self.conv2(self.conv1(self.norm1(x))))
        h = h * self.sca(F.adaptive_avg_pool2d(h, 1))
        y = x + self.conv3(h) * self.beta
        h = self.conv5(self.gate(self.conv4(self.norm2(y))))
        return y + h * self.gamma


@register_arch("nafnet")
class NAFNet(nn.Module):
    """NAFNet. Input B×3×H×W in [0, 1], any H and W; output the same shape (not clamped).

    Args:
        width: channels at full resolution (level l has width·2^l).
        enc_blocks: NAFBlocks per encoder level (one down-sampling after each level).
        middle_blocks: NAFBlocks at the deepest level.
        dec_blocks: NAFBlocks per decoder level, deepest first; as many levels as enc_blocks.
        dw_expand, ffn_expand: channel expansion of the two branches (NAFNet's 2 and 2).
    """

    def __init__(self, width: int = 16, enc_blocks: Sequence[int] = (1, 1, 1, 28), middle_blocks: int = 1,
                 dec_blocks: Sequence[int] = (1, 1, 1, 1), dw_expand: int = 2, ffn_expand: int = 2):
        super().__init__()
        enc_blocks, dec_blocks = list(enc_blocks), list(dec_blocks)
        if len(enc_blocks) != len(dec_blocks):
            raise ValueError(f"enc_blocks ({enc_blocks}) and dec_blocks ({dec_blocks}) need the same length")
        if width < 1 or dw_expand < 1 or ffn_expand < 1 or (width * dw_expand) % 2 or (width * ffn_expand) % 2:
            raise ValueError("width·dw_expand and width·ffn_expand must be even and positive")
        self.stride = 2 ** len(enc_blocks)
        self.intro = nn.Conv2d(3, width, 3, padding=1)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()

        def blocks(c: int, n: int) -> nn.Sequential:
            return nn.Sequential(*[NAFBlock(c, dw_expand, ffn_expand) for _ in range(n)])

        c = width
        for n in enc_blocks:
            self.encoders.append(blocks(c, n))
            self.downs.append(nn.Conv2d(c, 2 * c, 2, stride=2))
            c *= 2
        self.middle = blocks(c, middle_blocks)
        for n in dec_blocks:
            self.ups.append(nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.PixelShuffle(2)))
            c //= 2
            self.decoders.append(blocks(c, n))
        self.ending = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        inp = pad_to_multiple(x, self.stride)
        feat = self.intro(inp)
        skips = []
        for enc, down in zip(self.encoders, self.downs):
            feat = enc(feat)
            skips.append(feat)
            feat = down(feat)
        feat = self.middle(feat)
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips)):
            feat = dec(up(feat) + skip)
        out = self.ending(feat) + inp
        return out[..., :h, :w].contiguous()

    def aux_loss(self) -> torch.Tensor:
        """No auxiliary loss (the trainer adds `aux_weight · aux_loss()` for every model)."""
        return torch.zeros((), device=self.intro.weight.device)
