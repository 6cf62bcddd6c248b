"""Evaluation that can be read: the rainy input's row beside the model, gain = model − input, the
released protocol, before/after grids, and the same grids in TensorBoard during training."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from unirain_model import evaluation
from unirain_model.data import read_pairs
from unirain_model.evaluation import (
    collect_test_sets, evaluate_pairs, format_markdown, format_table, score_inputs, summarize, write_reports)
from unirain_model.metrics import crop_to_multiple, psnr, released_ssim, ssim

FOLDERS = {"drs": "day_streak", "drd": "day_drop", "nrs": "night_streak", "nrd": "night_drop"}
TINY_MODEL = {"type": "unirain", "dim": 8, "num_blocks": [1, 1], "heads": [1, 1], "num_refinement_blocks": 1,
              "expert_expansion": 1.0, "num_experts": 2, "top_k": 1}
SIZES = [(40, 52), (35, 70)]  # neither a multiple of 16: the released protocol must crop them


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_test_set(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for k, folder in enumerate(FOLDERS):
        for i, (h, w) in enumerate(SIZES):
            yy, xx = np.mgrid[0:h, 0:w]
            clean = np.stack([(xx * 5 + 40 * k) % 256, (yy * 7) % 256, ((xx + yy) * 3) % 256], -1).astype(np.uint8)
            streaks = rng.integers(0, 90, (h, w, 1)) * (rng.random((h, w, 1)) < 0.15)
            rain = np.clip(clean.astype(int) + streaks, 0, 255).astype(np.uint8)
            for sub, img in (("input", rain), ("target", clean)):
                (root / folder / sub).mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(root / folder / sub / f"img{i}.png")
    return root


@pytest.fixture(scope="module")
def test_set(tmp_path_factory) -> Path:
    return make_test_set(tmp_path_factory.mktemp("ev") / "synthtest")


class Identity(nn.Module):
    """Does nothing: its scores must equal the input row and its gain must be 0."""

    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))  # derain_array reads the device from a parameter
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return x


class Darken(Identity):
    def forward(self, x):
        return x * 0.9


def _direct(pairs: pd.DataFrame, fn) -> dict[str, float]:
    """Per type: the mean of fn(rainy, clean) over the pairs, computed here without evaluation.py."""
    out = {}
    for t, part in pairs.groupby("rain_type"):
        vals = [fn(np.asarray(Image.open(r).convert("RGB")), np.asarray(Image.open(c).convert("RGB")))
                for r, c in zip(part["rainy_path"], part["clean_path"])]
        out[t] = float(np.mean(vals))
    return out


def test_input_row_equals_metrics_of_the_rainy_image(test_set):
    pairs = collect_test_sets([test_set])
    per_image = evaluate_pairs(Darken(), pairs)
    summary = summarize(per_image)
    want_psnr = _direct(pairs, psnr)
    want_ssim = _direct(pairs, ssim)
    rows = summary.set_index("rain_type")
    for t in FOLDERS.values():
        assert rows.loc[t, "images"] == len(SIZES)
        assert rows.loc[t, "input_psnr"] == pytest.approx(want_psnr[t], abs=1e-9)
        assert rows.loc[t, "input_ssim"] == pytest.approx(want_ssim[t], abs=1e-9)
        # gain = model − input, per type and for the test set's `all` row
    for r in summary.to_dict("records"):
        for m in ("psnr", "ssim", "psnr_y", "ssim_y"):
            assert r[f"gain_{m}"] == pytest.approx(r[m] - r[f"input_{m}"], abs=1e-12)
    assert (summary["gain_psnr"] < 0).all()  # darkening makes every image worse than the rainy input
    assert set(summary["protocol"]) == {"basicsr"}
    # score_inputs alone gives the same per-image input scores
    alone = score_inputs(pairs)
    assert np.allclose(alone["input_psnr"].to_numpy(), per_image["input_psnr"].to_numpy(), atol=0)


def test_doing_nothing_gains_nothing(test_set):
    summary = summarize(evaluate_pairs(Identity(), collect_test_sets([test_set])))
    for m in ("psnr", "ssim", "psnr_y", "ssim_y"):
        assert np.allclose(summary[m], summary[f"input_{m}"], atol=0)
        assert np.allclose(summary[f"gain_{m}"], 0.0, atol=0)


def test_input_scores_are_computed_once_per_pair(test_set, monkeypatch):
    """The input row does not depend on the model: a second model on the same test set reuses it."""
    pairs = collect_test_sets([test_set])
    evaluation._INPUT_CACHE.clear()
    calls = []
    real = evaluation.score
    monkeypatch.setattr(evaluation, "score", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = evaluate_pairs(Identity(), pairs)
    assert len(calls) == 2 * len(pairs)  # input + model
    calls.clear()
    second = evaluate_pairs(Darken(), pairs)
    assert len(calls) == len(pairs)  # model only
    assert np.array_equal(first["input_psnr"].to_numpy(), second["input_psnr"].to_numpy())


def test_released_protocol_crops_to_16_and_uses_skimage_ssim(test_set):
    pairs = collect_test_sets([test_set])
    model = Identity()
    per_image = evaluate_pairs(Darken(), pairs, protocol="released")
    evaluate_pairs(model, pairs, protocol="released")
    assert model.shapes and all(s[2] % 16 == 0 and s[3] % 16 == 0 for s in model.shapes)
    assert {s[2:] for s in model.shapes} == {(32, 48), (32, 64)}

    def darkened_ssim(rainy, clean):
        a = crop_to_multiple(rainy).astype(np.float32) / 255 * np.float32(0.9)
        return released_ssim(a, crop_to_multiple(clean))

    def input_ssim(rainy, clean):
        return released_ssim(crop_to_multiple(rainy), crop_to_multiple(clean))

    summary = summarize(per_image).set_index("rain_type")
    want_model, want_input = _direct(pairs, darkened_ssim), _direct(pairs, input_ssim)
    for t in FOLDERS.values():
        assert summary.loc[t, "ssim"] == pytest.approx(want_model[t], abs=1e-7)
        assert summary.loc[t, "input_ssim"] == pytest.approx(want_input[t], abs=1e-7)
        assert np.isnan(summary.loc[t, "psnr_y"])  # released: RGB only
    assert set(summary["protocol"]) == {"released"}
    text = format_table(summarize(per_image))
    assert text.startswith("protocol: released") and "input" in text and "gain" in text
    assert "Protocol: **released**" in format_markdown(summarize(per_image))


def test_table_and_reports_name_the_protocol(test_set, tmp_path):
    per_image = evaluate_pairs(Darken(), collect_test_sets([test_set]))
    summary = summarize(per_image)
    text = format_table(summary)
    lines = text.splitlines()
    assert lines[0].startswith("protocol: basicsr")
    assert "PSNR" in lines[1] and lines[1].count("input") == 2 and lines[1].count("gain") == 2
    day = next(line for line in lines if "day_streak" in line)
    r = summary.set_index("rain_type").loc["day_streak"]
    assert f"{r.psnr:.2f}" in day and f"{r.input_psnr:.2f}" in day and f"{r.gain_psnr:+.2f}" in day
    assert "does not beat the rainy input" in text and "0 of 4" in text
    paths = write_reports(summary, per_image, tmp_path / "ev", meta={"checkpoint": "x"})
    assert [p.name for p in paths] == ["ev.csv", "ev.json", "ev.images.csv", "ev.md"]
    assert "input_psnr" in pd.read_csv(tmp_path / "ev.csv").columns
    assert "Protocol: **basicsr**" in (tmp_path / "ev.md").read_text()
    import json

    assert json.loads((tmp_path / "ev.json").read_text())["meta"]["protocol"] == "basicsr"


def test_checkpoint_evaluation_writes_grids_and_cli_protocol(test_set, tmp_path, capsys):
    from flows.cli import main
    from unirain_model.archs import build_model
    from unirain_model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "run/checkpoints", build_model(TINY_MODEL), TINY_MODEL, 0, ["day_streak"], {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--data", str(test_set),
                     "--protocol", "released", "--grid-images", "2"]) == 0
    printed = capsys.readouterr().out
    assert "protocol: released" in printed and "gain" in printed
    reports = tmp_path / "run/reports"  # the default: beside the checkpoint's run
    grids = sorted((reports / "evaluation_grids" / "synthtest").glob("*.png"))
    assert [g.stem for g in grids] == sorted(FOLDERS.values())
    for g in grids:
        with Image.open(g) as im:
            assert im.mode == "RGB" and max(im.size) < 1000  # modest: 2 rows of 3 thumbnails
            assert im.size[1] > im.size[0] * 0.5  # two rows of images, not an empty header
    md = (reports / "evaluation.md").read_text()
    assert "Protocol: **released**" in md and "evaluation_grids/synthtest/day_drop.png" in md
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--data", str(test_set),
                 "--protocol", "released", "--crop-border", "4"]) == 2
    assert "crop_border" in capsys.readouterr().err


def test_bad_pair_is_skipped_for_model_and_input_alike(test_set, tmp_path):
    import shutil

    root = tmp_path / "withbad"
    shutil.copytree(test_set, root)
    (root / "drs/input/broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / "drs/target/broken.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_image = evaluate_pairs(Darken(), collect_test_sets([root]))
    r = summarize(per_image).set_index("rain_type").loc["day_streak"]
    assert r.images == len(SIZES) and r.skipped == 1 and np.isfinite(r.input_psnr) and np.isfinite(r.gain_psnr)


def test_training_logs_preview_grids_and_input_baseline_to_tensorboard(test_set, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from unirain_model.config import parse_train_config
    from unirain_model.trainer import train

    cfg = parse_train_config(dict(model=TINY_MODEL, iters=4, batch_size=4, crop=32, warmup_iters=1, eval_every=2,
                                  val_fraction=0.3, val_crop=32, num_workers=0, log_every=2, ckpt_every=4,
                                  reweighting={"warmup_evals": 0}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(cfg, tmp_path / "run", test_set, show_progress_bar=False)
    acc = EventAccumulator(str(tmp_path / "run/tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {f"preview/{t}" for t in result.types} <= set(tags["images"])
    for t in result.types:
        events = acc.Images(f"preview/{t}")
        assert [e.step for e in events] == [2, 4]  # at every validation
        assert events[0].width >= 3 * 32 and len(events[0].encoded_image_string) > 100
        baseline = acc.Scalars(f"val_psnr_input/{t}")
        assert [e.step for e in baseline] == [2, 4] and baseline[0].value == baseline[1].value  # computed once
    last = result.history[-1]
    pairs = read_pairs(test_set)
    assert all(np.isfinite(last[f"input_psnr_{t}"]) for t in result.types) and len(pairs) == 8


def test_train_flow_evaluates_and_publishes_input_gain_and_grids(test_set, tmp_path, prefect_harness):
    """A run config with `evaluate:` test data: the train flow ends with the evaluation; its artifacts
    carry the input and gain columns, the protocol and the grids inline (the UI cannot open files)."""
    import asyncio

    import yaml
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.train import train_flow

    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "train": dict(model=TINY_MODEL, iters=2, batch_size=4, crop=32, warmup_iters=1, eval_every=2, val_fraction=0.3,
                      val_crop=32, num_workers=0, log_every=1, ckpt_every=2, reweighting={"warmup_evals": 0}),
        "evaluate": {"data": [str(test_set)], "protocol": "released", "grid_images": 1}}))
    run = tmp_path / "evrun"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = train_flow(run=str(run), config=str(cfg), manifest=str(test_set))
    rows = {r["rain_type"]: r for r in out["evaluation"]}
    assert rows["all"]["protocol"] == "released" and rows["all"]["images"] == 8
    assert rows["all"]["gain_psnr"] == pytest.approx(rows["all"]["psnr"] - rows["all"]["input_psnr"])
    assert (run / "reports/evaluation.md").is_file() and len(list((run / "reports/evaluation_grids").rglob("*.png"))) == 4
    table = format_table(pd.DataFrame(out["evaluation"]))  # what `make demo` prints from the flow's records
    assert table.startswith("protocol: released") and "synthtest: the model" in table

    async def artifacts():
        async with get_client() as client:
            arts = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_="evrun-")))
            return {a.key: a for a in arts}

    from data_manifests import RunLayout
    from flows.artifacts import artifact_key

    arts = {k.replace(artifact_key(RunLayout.at(run), ""), "evrun-"): a for k, a in asyncio.run(artifacts()).items()}
    assert "input_psnr" in arts["evrun-evaluation"].data and "gain_ssim" in arts["evrun-evaluation"].data
    md = arts["evrun-evaluation-md"].data
    assert "Protocol: **released**" in md and md.count("data:image/jpeg;base64,") == 4
    report = arts["evrun-training-report"].data
    assert "| input | gain |" in report  # last validation beside the input
    assert "![training history](data:image/png;base64," in report  # the chart inline: the UI cannot open files
