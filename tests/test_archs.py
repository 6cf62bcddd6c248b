"""The derainer architecture: shapes, MoE routing, aux loss, registry, MAC budget, `model-info`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from data_manifests.registry import RegistryError
from unirain_model.archs import ARCH_REGISTRY, build_model, load_model_config, register_arch
from unirain_model.complexity import count_macs, count_params, experts_per_layer
from unirain_model.moe import DenseFFN, HardMoEFFN, SoftMoEFFN

ROOT = Path(__file__).resolve().parents[1]
PAPER_MACS = 126.5e9
TINY = {"type": "unirain", "dim": 8, "num_blocks": [1, 1, 1], "heads": [1, 2, 2], "num_refinement_blocks": 1,
        "expert_expansion": 1.0, "num_experts": 4, "top_k": 2}
VARIANTS = [("soft", "hard"), ("soft", "soft"), ("hard", "hard"), ("dense", "dense")]


@pytest.fixture(autouse=True, scope="module")
def _few_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny(**over) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model({**TINY, **over})


@pytest.mark.parametrize("shape", [(1, 3, 67, 91), (2, 3, 32, 32), (1, 3, 5, 3), (1, 3, 8, 1)])
def test_any_size_gives_same_size(shape):
    model = tiny().eval()
    x = torch.rand(shape)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_reflect_pad_bottom_right_then_crop():
    """An odd size runs as its reflect-padded (bottom/right, to the stride) version, cropped back."""
    import torch.nn.functional as F

    model = tiny().eval()
    torch.nn.init.normal_(model.output.weight, std=0.05)  # a trained-like output, not the identity
    assert model.stride == 4
    x = torch.rand(1, 3, 30, 45)
    with torch.no_grad():
        y = model(x)
        ref = model(F.pad(x, (0, 3, 0, 2), mode="reflect"))[..., :30, :45]
    torch.testing.assert_close(y, ref)
    assert not torch.allclose(y, x, atol=1e-3)  # the network changes the image


@pytest.mark.parametrize("enc,dec", VARIANTS)
def test_variants_forward_backward(enc, dec):
    model = tiny(encoder_ffn=enc, decoder_ffn=dec).train()
    torch.nn.init.normal_(model.output.weight, std=0.05)  # past the first step (it starts at zero)
    x = torch.rand(2, 3, 24, 40, requires_grad=True)
    y = model(x)
    loss = y.abs().mean() + 0.01 * model.aux_loss()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        if "router" in name or "experts.w_" in name:  # routed experts and routers really learn
            assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"
    kinds = {row["kind"] for row in experts_per_layer(model)}
    assert kinds == {enc, dec}
    # encoder blocks use encoder_ffn, decoder/refinement blocks decoder_ffn
    assert all(isinstance(b.ffn, {"soft": SoftMoEFFN, "hard": HardMoEFFN, "dense": DenseFFN}[enc])
               for stage in [*model.encoders, model.latent] for b in stage)
    assert all(isinstance(b.ffn, {"soft": SoftMoEFFN, "hard": HardMoEFFN, "dense": DenseFFN}[dec])
               for stage in [*model.decoders, model.refinement] for b in stage)


def test_hard_moe_routes_top_k_only():
    torch.manual_seed(1)
    layer = HardMoEFFN(dim=6, hidden=5, num_experts=5, top_k=2)
    x = torch.randn(2, 6, 7, 9)
    layer(x)
    w = layer.last_routing  # (B, E, H, W)
    assert w.shape == (2, 5, 7, 9)
    assert ((w > 0).sum(dim=1) == 2).all()  # exactly top_k experts per pixel
    torch.testing.assert_close(w.sum(dim=1), torch.ones(2, 7, 9))
    # the chosen experts are the router's top-k
    tokens = layer.dwconv(x).permute(0, 2, 3, 1).reshape(-1, 6)
    top = torch.softmax(layer.router(tokens), -1).topk(2, dim=-1).indices.sort(-1).values
    chosen = (w.permute(0, 2, 3, 1).reshape(-1, 5) > 0).nonzero()[:, 1].reshape(-1, 2)
    assert torch.equal(top, chosen)


def test_hard_moe_equals_dense_computation_of_chosen_experts():
    """Gather/scatter gives exactly Σ_chosen w_e·expert_e(token)."""
    torch.manual_seed(2)
    layer = HardMoEFFN(dim=4, hidden=3, num_experts=4, top_k=2)
    x = torch.randn(1, 4, 5, 6)
    out = layer(x).permute(0, 2, 3, 1).reshape(-1, 4)
    tokens = layer.dwconv(x).permute(0, 2, 3, 1).reshape(-1, 4)
    w = layer.last_routing.permute(0, 2, 3, 1).reshape(-1, 4)
    ref = sum(w[:, e : e + 1] * layer.experts.run(e, tokens) for e in range(4))
    torch.testing.assert_close(out, ref)


def test_unchosen_experts_get_no_gradient_from_a_token():
    torch.manual_seed(3)
    layer = HardMoEFFN(dim=4, hidden=3, num_experts=6, top_k=2)
    x = torch.randn(1, 4, 4, 4)
    out = layer(x)
    h, w = 1, 2
    out[0, :, h, w].sum().backward()
    chosen = set((layer.last_routing[0, :, h, w] > 0).nonzero().flatten().tolist())
    assert len(chosen) == 2
    for e in range(6):
        g_in = layer.experts.w_in.grad[e].abs().sum().item()
        g_out = layer.experts.w_out.grad[e].abs().sum().item()
        if e in chosen:
            assert g_in > 0 and g_out > 0, f"chosen expert {e} got no gradient"
        else:
            assert g_in == 0 and g_out == 0, f"unchosen expert {e} got a gradient"


def test_hard_moe_aux_loss_positive_and_differentiable():
    torch.manual_seed(4)
    layer = HardMoEFFN(dim=4, hidden=3, num_experts=4, top_k=1)
    layer(torch.randn(2, 4, 6, 6))
    aux = layer.aux_loss()
    assert aux.ndim == 0 and aux.item() > 0 and aux.requires_grad
    aux.backward()
    assert layer.router.weight.grad.abs().sum() > 0
    # collapsed routing (every token to expert 0) is penalised: aux -> E
    with torch.no_grad():
        layer.dwconv.weight.zero_()
        layer.dwconv.weight[:, 0, 1, 1] = 1.0  # identity
        layer.router.weight.zero_()
        layer.router.weight[0] = 10.0
    layer(torch.rand(2, 4, 6, 6) + 1.0)
    assert (layer.last_routing[:, 0] == 1).all()
    assert layer.aux_loss().item() == pytest.approx(4.0, abs=1e-3)
    assert aux.item() < 4.0


def test_model_aux_loss_and_routing():
    model = tiny()
    model(torch.rand(1, 3, 16, 16))
    aux = model.aux_loss()
    assert aux.ndim == 0 and aux.requires_grad and aux.item() > 0
    routing = model.routing()
    assert len(routing) == len(experts_per_layer(model))
    for name, w in routing.items():
        assert w.shape[:2] == (1, 4) and not w.requires_grad
        torch.testing.assert_close(w.sum(dim=1), torch.ones_like(w[:, 0]))
    soft = [w for n, w in routing.items() if n.startswith(("encoders", "latent"))]
    assert soft and all((w > 0).all() for w in soft)  # soft: every expert weighted
    hard = [w for n, w in routing.items() if n.startswith(("decoders", "refinement"))]
    assert hard and all(((w > 0).sum(dim=1) == 2).all() for w in hard)
    model.set_record_routing(False)
    model(torch.rand(1, 3, 16, 16))
    assert model.routing() == {}


def test_dense_and_soft_models_have_zero_aux_loss():
    for enc, dec in [("soft", "soft"), ("dense", "dense")]:
        model = tiny(encoder_ffn=enc, decoder_ffn=dec)
        model(torch.rand(1, 3, 8, 8))
        assert model.aux_loss().item() == 0.0
    assert tiny(encoder_ffn="dense", decoder_ffn="dense").routing() == {}


def test_soft_moe_weights_sum_to_one_and_mix():
    torch.manual_seed(5)
    layer = SoftMoEFFN(dim=4, hidden=3, num_experts=3)
    x = torch.randn(1, 4, 5, 5)
    out = layer(x).permute(0, 2, 3, 1).reshape(-1, 4)
    w = layer.last_routing.permute(0, 2, 3, 1).reshape(-1, 3)
    torch.testing.assert_close(w.sum(-1), torch.ones(25))
    tokens = layer.dwconv(x).permute(0, 2, 3, 1).reshape(-1, 4)
    ref = sum(w[:, e : e + 1] * layer.experts.run(e, tokens) for e in range(3))
    torch.testing.assert_close(out, ref)


def test_registry_errors(tmp_path):
    with pytest.raises(ValueError, match="'bogus'"):
        build_model({**TINY, "bogus": 1})
    with pytest.raises(RegistryError, match="unknown architecture 'nope'"):
        build_model({"type": "nope"})
    with pytest.raises(ValueError, match="missing key 'type'"):
        build_model({"dim": 8})
    with pytest.raises(ValueError, match="encoder_ffn"):
        build_model({**TINY, "encoder_ffn": "sparse"})
    with pytest.raises(ValueError, match="top_k"):
        build_model({**TINY, "top_k": 5})
    with pytest.raises(ValueError, match="heads"):
        build_model({**TINY, "heads": [3, 2, 2]})
    assert ARCH_REGISTRY.get("unirain") is type(tiny())

    @register_arch("test-identity")
    class Identity(torch.nn.Module):
        def __init__(self, scale: float = 1.0):
            super().__init__()
            self.scale = scale

    try:
        assert build_model({"type": "test-identity", "scale": 2.0}).scale == 2.0
        with pytest.raises(RegistryError, match="architecture 'test-identity' is already registered"):
            register_arch("test-identity")(type("Other", (torch.nn.Module,), {}))
    finally:
        ARCH_REGISTRY._items.pop("test-identity")  # Registry has no public removal; tests only


def test_load_model_config_model_and_run_yaml(tmp_path):
    cfg = load_model_config(ROOT / "configs/model/unirain.yaml")
    assert cfg["type"] == "unirain" and cfg["encoder_ffn"] == "soft" and cfg["decoder_ffn"] == "hard"
    (tmp_path / "m.yaml").write_text("type: unirain\ndim: 8\n")
    (tmp_path / "run.yaml").write_text("train:\n  model: m.yaml\n")
    assert load_model_config(tmp_path / "run.yaml") == {"type": "unirain", "dim": 8}
    (tmp_path / "inline.yaml").write_text("train:\n  model: {type: unirain, dim: 16}\n")
    assert load_model_config(tmp_path / "inline.yaml")["dim"] == 16
    (tmp_path / "bad.yaml").write_text("train:\n  iters: 3\n")
    with pytest.raises(ValueError, match="train.model"):
        load_model_config(tmp_path / "bad.yaml")


def _meta_model(name: str) -> torch.nn.Module:
    with torch.device("meta"):
        return build_model(load_model_config(ROOT / "configs/model" / name))


def test_paper_config_mac_budget():
    macs = count_macs(_meta_model("unirain.yaml"), (1, 3, 256, 256))
    assert abs(macs - PAPER_MACS) <= 0.15 * PAPER_MACS, f"{macs / 1e9:.1f} G MACs"
    small = count_macs(_meta_model("unirain-s.yaml"), (1, 3, 256, 256))
    assert small <= PAPER_MACS / 8, f"unirain-s: {small / 1e9:.1f} G MACs"
    for name in ("unirain-soft-soft.yaml", "unirain-hard-hard.yaml", "unirain-dense.yaml"):
        m = _meta_model(name)
        assert count_params(m) > 0 and count_macs(m, (1, 3, 64, 64)) > 0


def test_mac_count_matches_formula_and_counts_only_run_experts():
    """MACs of a single hard layer: dwconv + router + top_k experts; real routing == meta count."""
    dim, hidden, n = 8, 6, 10 * 12
    for e, k in [(2, 2), (8, 2), (8, 1)]:
        layer = HardMoEFFN(dim, hidden, e, k)
        expected = n * (9 * dim + dim * e + k * 3 * dim * hidden)
        assert count_macs(layer, (1, dim, 10, 12)) == expected
        with torch.device("meta"):
            meta_layer = HardMoEFFN(dim, hidden, e, k)
        assert count_macs(meta_layer, (1, dim, 10, 12)) == expected
    soft = SoftMoEFFN(dim, hidden, 4)
    assert count_macs(soft, (1, dim, 10, 12)) == n * (9 * dim + dim * 4 + 4 * 3 * dim * hidden)
    # a real forward and a meta forward of the whole model count the same
    real = count_macs(tiny(), (1, 3, 32, 32))
    with torch.device("meta"):
        meta = build_model(TINY)
    assert count_macs(meta, (1, 3, 32, 32)) == real


def test_model_info_json(capsys, tmp_path):
    from flows.cli import main

    assert main(["model-info", "--config", str(ROOT / "configs/model/unirain.yaml"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert abs(info["macs_256"] - PAPER_MACS) <= 0.15 * PAPER_MACS
    with torch.device("meta"):
        assert info["params"] == count_params(build_model(load_model_config(ROOT / "configs/model/unirain.yaml")))
    assert {r["kind"] for r in info["experts_per_layer"]} == {"soft", "hard"}
    # a run config naming the model, and the plain-text table
    (tmp_path / "run.yaml").write_text(f"train:\n  model: {ROOT / 'configs/model/unirain-s.yaml'}\n")
    assert main(["model-info", "--config", str(tmp_path / "run.yaml")]) == 0
    out = capsys.readouterr().out
    assert "params:" in out and "MACs at 256x256" in out and "hard" in out
    # bad input: a clear error, exit 2
    (tmp_path / "bad.yaml").write_text("type: unirain\nwidth: 3\n")
    assert main(["model-info", "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "'width'" in capsys.readouterr().err


def test_ffn_kinds_are_one_registry_and_layers_report_their_active_experts():
    from unirain_model.moe import FFN_REGISTRY, make_ffn

    assert FFN_REGISTRY.names() == ["dense", "hard", "soft"]
    layers = {k: make_ffn(k, dim=8, hidden=4, num_experts=6, top_k=3) for k in FFN_REGISTRY}
    assert {k: m.active_experts() for k, m in layers.items()} == {"dense": 1, "hard": 3, "soft": 6}
    assert layers["dense"].experts.hidden == 12  # as wide as the top_k experts of a hard layer
    with pytest.raises(RegistryError, match="unknown FFN kind 'sparse'"):
        make_ffn("sparse", 8, 4, 6, 3)
    with pytest.raises(RegistryError, match="already registered"):
        FFN_REGISTRY.register("soft")(HardMoEFFN)
    # complexity reads the layer's own answer: a hard layer with top_k=1 runs one expert
    rows = experts_per_layer(tiny(encoder_ffn="hard", top_k=1))
    assert {r["active_per_token"] for r in rows} == {1}


def test_starts_as_the_identity_and_learns_from_there():
    """The output projection starts at zero: out = x exactly; the inner layers learn from step 2."""
    model = tiny().train()
    x, y = torch.rand(2, 3, 24, 24), torch.rand(2, 3, 24, 24)
    torch.testing.assert_close(model(x), x, rtol=0, atol=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    inner = model.embed.weight
    for step in range(2):
        opt.zero_grad()
        (model(x) - y).abs().mean().backward()
        assert (inner.grad.abs().sum() > 0) == (step == 1)  # zero while the output is zero
        opt.step()
    assert not torch.allclose(model(x), x)
