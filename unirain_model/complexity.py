"""Model size and cost: parameters, multiply-accumulates, experts per MoE layer.

MACs are counted the way restoration papers report "FLOPs" (Restormer, NAFNet): multiply-accumulates
of convolutions, linear layers and matmuls in one forward pass; norms, activations and softmax are left
out. The count comes from torch's FlopCounterMode on a real forward (it reports 2 FLOPs per MAC), so
it counts what actually executes: a Hard-MoE layer gathers its routed tokens, so only the top-k experts
per token are counted.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 256, 256)) -> int:
    """Multiply-accumulates of one forward pass on a random input of `input_shape`."""
    device = next(model.parameters()).device
    x = torch.rand(input_shape, device=device)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def experts_per_layer(model: nn.Module) -> list[dict[str, Any]]:
    """One row per FFN layer: name, kind, experts it holds, experts each token runs."""
    from unirain_model.moe import FFNLayer

    rows = []
    for name, m in model.named_modules():
        if isinstance(m, FFNLayer):
            rows.append({"layer": name, "kind": m.kind, "num_experts": m.num_experts,
                         "active_per_token": m.active_experts()})
    return rows


def summarize(model: nn.Module, size: int = 256) -> dict[str, Any]:
    """Params, MACs at size×size and the FFN layers grouped by (kind, experts, active)."""
    layers = experts_per_layer(model)
    groups: dict[tuple, int] = {}
    for row in layers:
        key = (row["kind"], row["num_experts"], row["active_per_token"])
        groups[key] = groups.get(key, 0) + 1
    return {
        "params": count_params(model),
        f"macs_{size}": count_macs(model, (1, 3, size, size)),
        "ffn_layers": [{"kind": k, "num_experts": e, "active_per_token": a, "layers": n}
                       for (k, e, a), n in groups.items()],
        "experts_per_layer": layers,
    }
