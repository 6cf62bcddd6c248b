"""`train.sampler` (balanced vs the released code's shuffle) and `train.reweighting.every` (the CoBa clock)."""
from __future__ import annotations

import json
import warnings
from collections import Counter

import pandas as pd
import pytest
import torch

from tests.test_train import _Stop, _stop_at, make_paper_folder, tiny_cfg
from unirain_model.checkpoint import load_state
from unirain_model.config import ConfigError, parse_train_config
from unirain_model.data import TrainCrops, TypeTable, iters_per_epoch, read_pairs, split_train_val
from unirain_model.trainer import reweighting_period, train


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _table(counts: dict[str, int]) -> TypeTable:
    """Paths only: `pick` never reads an image."""
    frame = pd.DataFrame([(t, f"{t}/in{i}.png", f"{t}/gt{i}.png") for t, n in counts.items() for i in range(n)],
                         columns=["rain_type", "rainy_path", "clean_path"])
    return TypeTable.from_frame(frame)


COUNTS = {"day_streak": 9, "day_drop": 3, "night_streak": 6, "night_drop": 2}  # 20 pairs, 45/15/30/10 %


def test_shuffle_visits_every_pair_once_per_epoch_so_types_follow_the_data():
    table = _table(COUNTS)
    per_iter = 4
    ds = TrainCrops(table, crop=8, seed=3, sampler="shuffle", samples_per_iter=per_iter)
    epoch = iters_per_epoch(20, per_iter)
    assert epoch == 5
    picks = [[ds.pick(g) for g in range(e * epoch * per_iter, (e + 1) * epoch * per_iter)] for e in range(3)]
    for p in picks:
        assert sorted(p) == sorted({(t, i) for t, n in enumerate(COUNTS.values()) for i in range(n)})  # a permutation
        assert Counter(t for t, _ in p) == {0: 9, 1: 3, 2: 6, 3: 2}  # proportions of the data, not equal
    assert picks[0] != picks[1] != picks[2]  # reshuffled each epoch
    # batches are not type-balanced: some batch of 4 misses a type
    assert any(len({t for t, _ in picks[0][b:b + per_iter]}) < 4 for b in range(0, 20, per_iter))
    # a pure function of (seed, g): a fresh dataset asked in another order agrees
    fresh = TrainCrops(table, crop=8, seed=3, sampler="shuffle", samples_per_iter=per_iter)
    assert [fresh.pick(g) for g in reversed(range(40))] == [p for e in picks[:2] for p in e][::-1]


def test_shuffle_epoch_that_does_not_divide_wraps_to_the_start():
    table = _table({"day_streak": 7, "night_drop": 3})  # 10 pairs, batch 4: 3 iterations, 2 samples repeat
    ds = TrainCrops(table, crop=8, seed=0, sampler="shuffle", samples_per_iter=4)
    first = [ds.pick(g) for g in range(12)]
    assert len(set(first)) == 10 and first[10:] == first[:2]


def test_balanced_draws_equal_numbers_per_type_in_every_batch():
    table = _table(COUNTS)
    ds = TrainCrops(table, crop=8, seed=3, sampler="balanced", samples_per_iter=8)
    picks = [ds.pick(g) for g in range(800)]
    for b in range(0, 800, 8):
        assert Counter(t for t, _ in picks[b:b + 8]) == {0: 2, 1: 2, 2: 2, 3: 2}
    # within a type every pair is drawn (uniformly at random)
    assert {i for t, i in picks if t == 3} == {0, 1}
    assert {i for t, i in picks if t == 0} == set(range(9))


def test_sampler_items_are_real_crops(tmp_path):
    data = make_paper_folder(tmp_path / "d", per_type=3)
    table = TypeTable.from_frame(read_pairs(data))
    ds = TrainCrops(table, crop=16, seed=1, sampler="shuffle", samples_per_iter=4)
    x, y, t = ds[5]
    assert x.shape == y.shape == (3, 16, 16) and t == ds.pick(5)[0]
    assert torch.equal(ds[5][0], x)


def test_config_names_the_keys():
    with pytest.raises(ConfigError, match=r"train\.sampler"):
        parse_train_config({"sampler": "random"})
    with pytest.raises(ConfigError, match=r"train\.reweighting\.every"):
        parse_train_config({"reweighting": {"every": 0}})
    with pytest.raises(ConfigError, match=r"train\.reweighting\.every"):
        parse_train_config({"reweighting": {"every": "epochs"}})
    assert parse_train_config({}).sampler == "balanced" and parse_train_config({}).reweighting.every is None


def test_reweighting_period():
    assert reweighting_period(None, eval_every=7, epoch_iters=3) == 7
    assert reweighting_period("epoch", eval_every=7, epoch_iters=3) == 3
    assert reweighting_period(5, eval_every=7, epoch_iters=3) == 5


# ----------------------------------------------------------------------------- the clock in training
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_paper_folder(tmp_path_factory.mktemp("clock"), per_type=4)


def _updates(run) -> int:
    latest = json.loads((run / "checkpoints/latest.json").read_text())
    return load_state(run / "checkpoints" / latest["state"])["reweighter"]["num_updates"]


def test_clock_every_n_iterations(tmp_path, data_dir):
    cfg = tiny_cfg(iters=7, eval_every=2, ckpt_every=7, reweighting={"warmup_evals": 0, "every": 3})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(cfg, tmp_path / "run", data_dir, show_progress_bar=False)
    flags = {r["iteration"]: r["reweighted"] for r in result.history}
    # evaluations at 2, 4, 6 (eval_every), 3, 6 (the clock) and 7 (the end); CoBa took 3 and 6 only
    assert flags == {2: 0, 3: 1, 4: 0, 6: 1, 7: 0}
    assert _updates(tmp_path / "run") == 2


def test_clock_every_epoch_and_resume_keeps_it(tmp_path, data_dir):
    n_train = len(split_train_val(read_pairs(data_dir), 0.3)[0])
    epoch = iters_per_epoch(n_train, 4)
    iters = 2 * epoch + 1
    cfg = tiny_cfg(iters=iters, eval_every=1000, ckpt_every=2, sampler="shuffle",
                   reweighting={"warmup_evals": 0, "every": "epoch"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = train(cfg, tmp_path / "full", data_dir, show_progress_bar=False)
        with pytest.raises(_Stop):  # killed after the checkpoint at iteration 2, mid-epoch
            train(cfg, tmp_path / "cut", data_dir, progress=_stop_at(2), show_progress_bar=False)
        resumed = train(cfg, tmp_path / "cut", data_dir, show_progress_bar=False)
    assert resumed.resumed_from == 2
    assert {r["iteration"]: r["reweighted"] for r in full.history} == {epoch: 1, 2 * epoch: 1, iters: 0}
    assert _updates(tmp_path / "full") == _updates(tmp_path / "cut") == 2
    ha = pd.read_csv(tmp_path / "full/reports/training_history.csv")
    hb = pd.read_csv(tmp_path / "cut/reports/training_history.csv")
    pd.testing.assert_frame_equal(ha, hb, atol=1e-6)  # same batches, same clock, same weights
