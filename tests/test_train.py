"""Training: data, config errors, resume equivalence, single type, and the train/evaluate flows and CLI."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from unirain_model.config import ConfigError, parse_train_config
from unirain_model.data import DataError, TrainCrops, TypeTable, read_pairs, split_train_val
from unirain_model.trainer import train

TINY_MODEL = {"type": "unirain", "dim": 8, "num_blocks": [1, 1], "heads": [1, 1], "num_refinement_blocks": 1,
              "expert_expansion": 1.0, "num_experts": 2, "top_k": 1}
FOLDERS = ("drs", "drd", "nrs", "nrd")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_paper_folder(root: Path, folders=FOLDERS, per_type: int = 3, seed: int = 0, bad: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    for k, folder in enumerate(folders):
        for i in range(per_type):
            h, w = (24, 30) if i == 0 else (40 + 4 * i, 48)  # the first is smaller than a crop
            yy, xx = np.mgrid[0:h, 0:w]
            clean = np.stack([(xx * 5 + 40 * k) % 256, (yy * 7) % 256, ((xx + yy) * 3) % 256], -1).astype(np.uint8)
            rain = np.clip(clean.astype(int) + rng.integers(0, 80, (h, w, 1)) * (rng.random((h, w, 1)) < 0.1), 0, 255)
            for sub, img in (("input", rain.astype(np.uint8)), ("target", clean)):
                (root / folder / sub).mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(root / folder / sub / f"img{i}.png")
    if bad:  # a truncated rainy file with an intact target
        (root / folders[0] / "input" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / folders[0] / "target" / "broken.png")
    return root


def tiny_cfg(**over):
    base = dict(model=TINY_MODEL, iters=4, batch_size=4, crop=32, warmup_iters=1, eval_every=2, val_fraction=0.3,
                val_crop=32, num_workers=0, log_every=1, ckpt_every=2, reweighting={"warmup_evals": 0})
    base.update(over)
    return parse_train_config(base)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_paper_folder(tmp_path_factory.mktemp("data"), bad=True)


# ----------------------------------------------------------------------------- data
def test_pairs_split_and_type_balanced_crops(data_dir):
    pairs = read_pairs(data_dir)
    assert set(pairs["rain_type"]) == {"day_streak", "day_drop", "night_streak", "night_drop"}
    assert len(pairs) == 13 and pairs["pair_id"].is_unique
    train_a, val_a = split_train_val(pairs, 0.3)
    train_b, val_b = split_train_val(pairs.sample(frac=1, random_state=1), 0.3)
    assert sorted(val_a["pair_id"]) == sorted(val_b["pair_id"])  # stable, order-independent
    assert set(val_a["rain_type"]) == set(pairs["rain_type"]) and not set(val_a["pair_id"]) & set(train_a["pair_id"])
    table = TypeTable.from_frame(train_a)
    ds = TrainCrops(table, crop=32, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        items = [ds[g] for g in range(8)]
        again = ds[3]
    assert [t for _, _, t in items] == [0, 1, 2, 3, 0, 1, 2, 3]  # every batch of 4 or 8 is balanced
    assert all(x.shape == (3, 32, 32) and y.shape == (3, 32, 32) for x, y, _ in items)
    assert torch.equal(again[0], items[3][0])  # a pure function of (seed, index)


def test_missing_or_empty_data_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_pairs(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        read_pairs(tmp_path / "empty")
    cols = {c: pd.Series([], dtype=str) for c in ("pair_id", "source", "rain_type", "rainy_path", "clean_path")}
    (tmp_path / "m").mkdir()
    pd.DataFrame(cols).to_parquet(tmp_path / "m" / "part-0000.parquet")
    with pytest.raises(DataError, match="empty"):
        read_pairs(tmp_path / "m")


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"train\.iters"):
        parse_train_config({"iters": 0})
    with pytest.raises(ConfigError, match=r"train\.reweighting\.tau"):
        parse_train_config({"reweighting": {"tau": -1}})
    with pytest.raises(ConfigError, match=r"train\.bogus"):
        parse_train_config({"bogus": 1})


# ----------------------------------------------------------------------------- training
class _Stop(Exception):
    pass


def _stop_at(n):
    def cb(it, total, info):
        if it == n:
            raise _Stop

    return cb


def test_resume_equals_uninterrupted(tmp_path, data_dir):
    cfg = tiny_cfg()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = train(cfg, tmp_path / "full", data_dir, show_progress_bar=False)
        with pytest.raises(_Stop):  # "killed" right after the checkpoint at iteration 2
            train(cfg, tmp_path / "cut", data_dir, progress=_stop_at(2), show_progress_bar=False)
        assert json.loads((tmp_path / "cut/checkpoints/latest.json").read_text())["iteration"] == 2
        resumed = train(cfg, tmp_path / "cut", data_dir, show_progress_bar=False)
        again = train(cfg, tmp_path / "cut", data_dir, show_progress_bar=False)  # finished: no work
    assert resumed.resumed_from == 2 and resumed.iteration == full.iteration == 4
    assert again.iteration == 4 and again.resumed_from == 4
    a, b = load_file(str(full.checkpoint)), load_file(str(resumed.checkpoint))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    ha = pd.read_csv(tmp_path / "full/reports/training_history.csv")
    hb = pd.read_csv(tmp_path / "cut/reports/training_history.csv")
    pd.testing.assert_frame_equal(ha, hb, atol=1e-6)
    assert list(ha["iteration"]) == [2, 4]
    assert ha.filter(like="weight_").sum(axis=1).round(9).eq(1).all()
    assert (tmp_path / "full/reports/training_history.png").stat().st_size > 1000
    assert any((tmp_path / "full/tensorboard").iterdir())
    # the weights moved away from uniform once CoBa ran (warm-up 0), and it was logged
    assert ha["af"].notna().all()


def test_single_type_warns_and_trains_uniform(tmp_path):
    data = make_paper_folder(tmp_path / "one", folders=("nrd",), per_type=3)
    with pytest.warns(UserWarning, match="one rain type"):
        result = train(tiny_cfg(iters=2), tmp_path / "run", data, show_progress_bar=False)
    assert result.types == ["night_drop"]
    assert [r["weight_night_drop"] for r in result.history] == [1.0]


# ----------------------------------------------------------------------------- flows and CLI
def _run_config(tmp_path: Path, **over) -> Path:
    model_yaml = tmp_path / "tiny-model.yaml"
    model_yaml.write_text(yaml.safe_dump(TINY_MODEL))
    section = dict(model="tiny-model.yaml", iters=2, batch_size=4, crop=32, warmup_iters=1, eval_every=1, val_fraction=0.3,
                   val_crop=32, num_workers=0, log_every=1, ckpt_every=1, reweighting={"warmup_evals": 0})
    section.update(over)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"train": section}))
    return path


def test_train_and_evaluate_flows(tmp_path, data_dir, prefect_harness):
    from prefect import get_client

    from flows.evaluate import evaluate_flow
    from flows.train import train_flow

    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = train_flow(run=str(run), config=str(_run_config(tmp_path)), manifest=str(data_dir), iters=None)
        assert out["iteration"] == 2 and Path(out["checkpoint"]).is_file()
        records = evaluate_flow(run=str(run), data=[str(data_dir)])
    rows = {(r["test_set"], r["rain_type"]): r for r in records}
    assert rows[(data_dir.name, "day_streak")]["images"] == 3 and rows[(data_dir.name, "day_streak")]["skipped"] == 1
    assert 0 < rows[(data_dir.name, "all")]["psnr"] < 60 and 0 < rows[(data_dir.name, "all")]["ssim_y"] <= 1
    assert (run / "reports/evaluation.csv").is_file() and (run / "reports/evaluation.json").is_file()

    import asyncio

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    async def keys():
        # Exact keys, newest first: other tests of the session make `run-*` artifacts too, and a
        # prefix query can pass the server's page limit before reaching these.
        wanted = [artifact_key(RunLayout.at(run), k) for k in ("training-progress", "evaluation")]
        async with get_client() as client:
            arts = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=wanted)),
                                               sort=ArtifactSort.CREATED_DESC)
        latest = {}
        for a in arts:
            latest.setdefault(a.key, a)
        return latest

    from data_manifests import RunLayout
    from flows.artifacts import artifact_key

    arts = asyncio.run(keys())
    assert arts[artifact_key(RunLayout.at(run), "training-progress")].data == 100.0
    assert "psnr_y" in arts[artifact_key(RunLayout.at(run), "evaluation")].data


def test_cli_evaluate_and_derain(tmp_path, data_dir):
    from flows.cli import main
    from unirain_model.checkpoint import save_checkpoint
    from unirain_model.archs import build_model

    torch.manual_seed(0)
    model = build_model(TINY_MODEL)
    ckpt = save_checkpoint(tmp_path / "run/checkpoints", model, TINY_MODEL, 0, ["day_streak"], {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--data", str(data_dir), "--out", str(tmp_path / "ev.json")]) == 0
        summary = pd.read_csv(tmp_path / "ev.csv")
        assert set(summary["rain_type"]) == {"day_streak", "day_drop", "night_streak", "night_drop", "all"}
        inputs = tmp_path / "in"
        inputs.mkdir()
        Image.fromarray(np.full((37, 50, 3), 120, np.uint8)).save(inputs / "a.png")
        Image.fromarray(np.full((70, 41, 3), 60, np.uint8)).save(inputs / "b.jpg")
        (inputs / "c.png").write_bytes(b"garbage")
        code = main(["derain", "--checkpoint", str(ckpt), str(inputs), str(tmp_path / "out"), "--tile", "32", "--tile-overlap", "8"])
    assert code == 1  # one bad image reported, the rest written
    assert Image.open(tmp_path / "out/a.png").size == (50, 37) and Image.open(tmp_path / "out/b.png").size == (41, 70)
    assert not (tmp_path / "out/c.png").exists()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nothing"), "--data", str(data_dir)]) == 2


def test_cli_train_refuses_bad_input_before_any_work(tmp_path, capsys):
    from flows.cli import main

    cfg = _run_config(tmp_path)
    (tmp_path / "empty").mkdir()
    assert main(["train", "--config", str(cfg), "--run", str(tmp_path / "r"), "--manifest", str(tmp_path / "empty")]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "--run", str(tmp_path / "r")]) == 2  # no manifests in the run
    assert "candidates" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"model": "missing.yaml"}}))
    assert main(["train", "--config", str(bad), "--run", str(tmp_path / "r")]) == 2
    assert "train.model" in capsys.readouterr().err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_triggered_training_skips_a_run_without_distilled_pairs(tmp_path, prefect_harness):
    """The deployment trigger passes require_distilled: a distill stopped before select trains nothing."""
    from data_manifests import RunLayout
    from flows.train import train_flow

    run = RunLayout.at(tmp_path / "run").create()
    result = train_flow(run=str(run.root), config="configs/demo.yaml", require_distilled=True)
    assert result == {"skipped": "no distilled manifest"}
    assert not list(run.checkpoints.iterdir())
