"""The trainer's recipe options: `l2_iters` then `loss` (l1 | charbonnier), the schedule (cosine to a
`min_lr` floor | constant), and its messages (resume line, plain progress lines, plain numbers)."""
import logging
import math
import warnings

import pytest
import torch

from unirain_model.config import parse_train_config
from unirain_model.trainer import loss_at, lr_factor, per_sample_loss, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_per_sample_losses():
    err = torch.tensor([[[[0.5, -0.5]]], [[[0.1, 0.3]]]])
    assert torch.allclose(per_sample_loss(err, "l2"), torch.tensor([0.25, 0.05]))
    assert torch.allclose(per_sample_loss(err, "l1"), torch.tensor([0.5, 0.2]))
    eps = 0.1
    want = torch.tensor([math.sqrt(0.25 + eps**2), (math.sqrt(0.01 + eps**2) + math.sqrt(0.09 + eps**2)) / 2])
    assert torch.allclose(per_sample_loss(err, "charbonnier", eps), want)
    assert per_sample_loss(torch.zeros(1, 1, 1, 1), "charbonnier", 1e-3).item() == pytest.approx(1e-3)  # floor eps at 0
    with pytest.raises(ValueError, match="unknown loss"):
        per_sample_loss(err, "l3")


def test_l2_phase_then_the_configured_loss():
    cfg = parse_train_config({"l2_iters": 2, "loss": "charbonnier"})
    assert [loss_at(i, cfg) for i in range(4)] == ["l2", "l2", "charbonnier", "charbonnier"]
    assert loss_at(0, parse_train_config({})) == "l1"  # the paper's L1 throughout by default


def test_recipe_options_default_to_the_paper_and_bad_values_name_the_key():
    cfg = parse_train_config({})
    assert (cfg.l2_iters, cfg.loss, cfg.charbonnier_eps, cfg.schedule, cfg.min_lr) == (0, "l1", 1e-3, "cosine", 0.0)
    for bad, key in (({"l2_iters": -1}, "l2_iters"), ({"loss": "l3"}, "loss"), ({"charbonnier_eps": 0}, "charbonnier_eps"),
                     ({"schedule": "step"}, "schedule"), ({"lr": 1e-4, "min_lr": 2e-4}, "min_lr")):
        with pytest.raises(ValueError, match=rf"train\.{key}"):
            parse_train_config(bad, "c.yaml")


def test_cosine_ends_at_its_floor_and_constant_stays():
    warm, total = 10, 100
    assert lr_factor(0, total, warm, 0.4) == pytest.approx(0.1)  # warm-up first, either schedule
    assert lr_factor(0, total, warm, 0.4, "constant") == pytest.approx(0.1)
    cos = [lr_factor(s, total, warm, 0.4) for s in range(warm, total + 1)]
    assert cos[0] == pytest.approx(1.0) and cos[-1] == pytest.approx(0.4) and min(cos) >= 0.4 - 1e-12
    assert all(a >= b for a, b in zip(cos, cos[1:]))
    assert [lr_factor(s, total, warm, 0.4, "constant") for s in range(warm, total + 1)] == [1.0] * (total - warm + 1)


def test_trainer_follows_the_schedule_and_logs_plainly(tmp_path, caplog):
    """The optimizer's lr follows cosine-to-floor; without a terminal the progress is plain log lines;
    a resumed run's first line names where it continues from; numbers are plain (no numpy reprs)."""
    from tests.test_train import make_paper_folder, tiny_cfg

    data = make_paper_folder(tmp_path / "data", per_type=3)
    cfg = tiny_cfg(iters=6, lr=1e-3, min_lr=4e-4, warmup_iters=0, ckpt_every=3, eval_every=3, loss="charbonnier", l2_iters=2)
    lrs = []
    caplog.set_level(logging.INFO, logger="unirain.train")

    class Stop(Exception):
        pass

    def stop_at_3(it, total, info):
        lrs.append(info.get("lr"))
        if it == 3:
            raise Stop

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Stop):
            train(cfg, tmp_path / "run", data, progress=stop_at_3)
        caplog.clear()
        result = train(cfg, tmp_path / "run", data, progress=lambda it, total, info: lrs.append(info.get("lr")))
    assert result.resumed_from == 3 and result.iteration == 6
    assert lrs[-1] == pytest.approx(4e-4)  # the cosine ended on its floor, not at 0
    lines = [r.getMessage() for r in caplog.records if r.name == "unirain.train"]
    assert lines[0].startswith("resuming from iteration 3 of 6, checkpoint ") and lines[0].endswith("iter_00000003.safetensors")
    progress = [m for m in lines if m.startswith("train ")]
    assert [m.split(" ")[1] for m in progress] == ["4/6", "5/6", "6/6"]  # every 10 % of 6 = each iteration here
    assert any(m.startswith("iteration 6: val L1 ") and "(input " in m for m in lines)
    assert any("checkpoint saved to" in m for m in lines) and "trained iterations 4-6 of 6" in lines[-1]
    assert not any("np." in m or "float64" in m or "tensor(" in m for m in lines)
    hist = result.history[-1]
    assert isinstance(hist["train_loss"], float) and hist["lr"] == pytest.approx(4e-4)
