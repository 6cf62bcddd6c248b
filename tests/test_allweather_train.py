"""All-weather end to end (issue 14): CoBa over six types against the authors' arithmetic generalised
to N, the sampler and type table with six types and a run's `types:`, the config, and a 4-iteration
training plus an evaluation on a six-type synthetic set with a row per type."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_manifests import ALL_WEATHER_TYPES, RAIN_TYPES
from tests.test_reweighting import _AuthorsCoBa
from tests.test_train import tiny_cfg
from unirain_model.data import DataError, TrainCrops, TypeTable, read_pairs, run_types
from unirain_model.reweighting import CoBa

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]


def test_coba_with_six_types_matches_the_authors_algorithm():
    rng = np.random.default_rng(14)
    ref = _AuthorsCoBa(6, history=5, tau=5.0, warmup=3, min_weight=0.1)
    coba = CoBa(num_types=6, history=5, tau=5.0, warmup_evals=3, min_weight=0.1)
    base = np.array([0.3, 0.2, 0.5, 0.4, 0.25, 0.15])
    rates = np.array([0.02, 0.05, 0.01, 0.03, 0.04, 0.0])  # fog does not converge at all
    for t in range(25):
        losses = base * np.exp(-rates * t) + rng.normal(0, 0.01, 6)
        w = coba.update(losses)
        np.testing.assert_allclose(w, ref.step(losses.tolist()), rtol=0, atol=1e-10)
        assert w.shape == (6,) and w.sum() == pytest.approx(1.0) and w.min() >= 0.1 - 1e-12
    assert not np.allclose(w, 1 / 6)  # the six signals moved the weights
    with pytest.raises(ValueError, match="min_weight"):
        CoBa(num_types=12, min_weight=0.1)  # twelve floors of 0.1 exceed 1


def _frame(counts: dict[str, int]) -> pd.DataFrame:
    return pd.DataFrame([(f"{t}{i}", "s", t, f"{t}/in{i}.png", f"{t}/gt{i}.png") for t, n in counts.items() for i in range(n)],
                        columns=["pair_id", "source", "rain_type", "rainy_path", "clean_path"])


def test_type_table_orders_the_declared_types_and_the_sampler_round_robins_six():
    frame = _frame({"fog": 2, "snow": 3, "night_drop": 1, "day_streak": 2, "day_drop": 1, "night_streak": 1})
    table = TypeTable.from_frame(frame)
    assert table.types == ALL_WEATHER_TYPES
    ds = TrainCrops(table, crop=8, seed=1)
    assert [ds.pick(g)[0] for g in range(12)] == list(range(6)) * 2  # every batch of 6 has each type once
    assert TypeTable.from_frame(frame, "rain").types == RAIN_TYPES
    assert TypeTable.from_frame(frame, ["snow", "fog"]).types == ("snow", "fog")


def test_run_types_from_a_config(tmp_path):
    from data_manifests.config_base import ConfigError
    from tasks.config import load_run_config

    assert run_types(REPO / "configs" / "allweather.yaml") == ALL_WEATHER_TYPES
    assert run_types(REPO / "configs" / "demo.yaml") == RAIN_TYPES  # no types: the four rain types
    assert load_run_config(REPO / "configs" / "allweather.yaml").types == list(ALL_WEATHER_TYPES)
    bad = tmp_path / "bad.yaml"
    bad.write_text("types: [snow, hail]\n")
    with pytest.raises(ConfigError, match="unknown degradation type 'hail'"):
        run_types(bad)
    with pytest.raises(ConfigError, match=r"types: .*unknown degradation type 'hail'"):
        load_run_config(bad)
    big_floor = tmp_path / "floor.yaml"
    big_floor.write_text("types: all\ntrain: {reweighting: {min_weight: 0.2}}\n")
    with pytest.raises(ConfigError, match=r"train.reweighting.min_weight: 0.2 x 6 types = 1.2 > 1"):
        run_types(big_floor)


@pytest.fixture(scope="module")
def six_type_data(tmp_path_factory) -> Path:
    from tasks.offline.synth import synthesize_paired

    root = tmp_path_factory.mktemp("allweather")
    synthesize_paired(root / "train", per_type=3, seed=0, size=(64, 64), rain_types="all")
    synthesize_paired(root / "test", per_type=1, seed=1, size=(64, 64), rain_types="all")
    return root


def test_read_pairs_keeps_the_run_types(six_type_data):
    every = read_pairs(six_type_data / "train")
    assert set(every["rain_type"]) == set(ALL_WEATHER_TYPES) and len(every) == 18
    assert set(read_pairs(six_type_data / "train", types="rain")["rain_type"]) == set(RAIN_TYPES)
    only_snow = six_type_data / "only_snow"
    if not only_snow.exists():
        import shutil

        shutil.copytree(six_type_data / "train" / "snow", only_snow / "snow")
    with pytest.raises(DataError, match="no image pairs in fog/"):
        read_pairs(only_snow, types="fog")
    frame = _frame({"snow": 2})
    from unirain_model.data import _keep_types

    with pytest.raises(DataError, match="no pairs of this run's types \\(fog\\); the data holds snow"), \
            pytest.warns(UserWarning, match="leaving out"):
        _keep_types(frame, ["fog"], Path("m"))
    with pytest.warns(UserWarning, match="leaving out 2 pair\\(s\\) of types outside this run's types \\(snow: 2\\)"):
        _keep_types(pd.concat([frame, _frame({"fog": 1})]), ["fog"], Path("m"))


def test_train_four_iterations_and_evaluate_a_row_per_type(six_type_data, tmp_path):
    from unirain_model.evaluation import evaluate_checkpoint
    from unirain_model.trainer import train

    cfg = tiny_cfg(batch_size=6, iters=4, eval_every=2, ckpt_every=2, val_fraction=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(cfg, tmp_path / "run", six_type_data / "train", show_progress_bar=False, types=ALL_WEATHER_TYPES)
    assert result.iteration == 4 and result.types == list(ALL_WEATHER_TYPES)
    last = result.history[-1]
    weights = [last[f"weight_{t}"] for t in ALL_WEATHER_TYPES]
    assert sum(weights) == pytest.approx(1.0) and all(f"val_l1_{t}" in last for t in ALL_WEATHER_TYPES)
    summary, per_image, _ = evaluate_checkpoint(result.checkpoint, data=[six_type_data / "test"], device="cpu",
                                                grid_images=0)
    assert list(summary["rain_type"]) == [*ALL_WEATHER_TYPES, "all"]
    assert (summary.set_index("rain_type").loc[list(ALL_WEATHER_TYPES), "images"] == 1).all()
    assert np.isfinite(summary["psnr"]).all() and np.isfinite(summary["gain_psnr"]).all()
    rain_only, _, _ = evaluate_checkpoint(result.checkpoint, data=[six_type_data / "test"], device="cpu",
                                          grid_images=0, types="rain")
    assert list(rain_only["rain_type"]) == [*RAIN_TYPES, "all"]
