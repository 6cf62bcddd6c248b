"""The NAFNet-style peer: builds from its config, any input size, trains, and its cost is reported."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unirain_model.archs import build_model, load_model_config
from unirain_model.complexity import count_macs, count_params, summarize

ROOT = Path(__file__).resolve().parents[1]
TINY = {"type": "nafnet", "width": 8, "enc_blocks": [1, 1], "middle_blocks": 1, "dec_blocks": [1, 1]}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("shape", [(1, 3, 37, 53), (2, 3, 16, 16), (1, 3, 3, 5)])
def test_any_size_gives_same_size(shape):
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    x = torch.rand(shape)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_blocks_start_as_identity_and_learn():
    """β = γ = 0: a block is the identity at init; one optimiser step makes it differ."""
    from unirain_model.archs.nafnet_arch import NAFBlock

    torch.manual_seed(0)
    block = NAFBlock(8)
    x = torch.randn(2, 8, 12, 12)
    torch.testing.assert_close(block(x), x)
    model = build_model(TINY)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    loss = (model(x) - y).abs().mean() + model.aux_loss()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    opt.step()
    assert not torch.allclose(model.encoders[0][0](torch.ones(1, 8, 4, 4)), torch.ones(1, 8, 4, 4))


def test_bad_config_names_the_problem():
    with pytest.raises(ValueError, match="same length"):
        build_model({**TINY, "dec_blocks": [1]})
    with pytest.raises(ValueError, match="'depth'"):
        build_model({**TINY, "depth": 3})


def test_config_is_at_unirain_s_budget_and_model_info_reports_it(capsys):
    cfg = load_model_config(ROOT / "configs/model/nafnet-s.yaml")
    with torch.device("meta"):
        naf = build_model(cfg)
        uni = build_model(load_model_config(ROOT / "configs/model/unirain-s.yaml"))
    naf_macs, uni_macs = count_macs(naf), count_macs(uni)
    assert abs(naf_macs - uni_macs) <= 0.15 * uni_macs, (naf_macs, uni_macs)
    summary = summarize(build_model(TINY), size=32)
    assert summary["params"] == count_params(build_model(TINY)) > 0 and summary["macs_32"] > 0
    assert summary["experts_per_layer"] == []

    from flows.cli import main

    assert main(["model-info", "--config", str(ROOT / "configs/model/nafnet-s.yaml"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["macs_256"] == naf_macs and info["params"] == count_params(naf)
