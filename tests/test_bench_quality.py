"""benchmarks/bench_quality.py: its size variants stay in step with unirain-s, its summary arithmetic, a smoke run."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from benchmarks import bench_quality as bq

MODELS = Path(__file__).resolve().parents[1] / "configs" / "model"
TYPES = ["day_streak", "day_drop", "night_streak", "night_drop"]


@pytest.mark.parametrize("variant,enc,dec", [("soft-soft", "soft", "soft"), ("hard-hard", "hard", "hard"),
                                             ("dense", "dense", "dense")])
def test_s_variants_differ_from_unirain_s_only_in_their_ffns(variant, enc, dec):
    base = yaml.safe_load((MODELS / "unirain-s.yaml").read_text())
    other = yaml.safe_load((MODELS / f"unirain-s-{variant}.yaml").read_text())
    assert (other["encoder_ffn"], other["decoder_ffn"]) == (enc, dec)
    strip = lambda d: {k: v for k, v in d.items() if k not in ("encoder_ffn", "decoder_ffn")}  # noqa: E731
    assert strip(other) == strip(base), f"configs/model/unirain-s-{variant}.yaml is out of step with unirain-s.yaml"


def test_the_test_photos_are_held_out(tmp_path):
    train, test = bq.export_photos(tmp_path)
    names_train = {p.stem for p in train.iterdir()}
    names_test = {p.stem for p in test.iterdir()}
    assert names_test == set(bq.TEST_PHOTOS) and not names_train & names_test
    assert {"motorcycle_left", "motorcycle_right"} <= names_train  # one stereo scene, one side


def _result(row, seed, avg, final=None):
    scores = {f"{m}_{t}": avg + (0.0 if m == "psnr" else -avg + 0.9) for m in ("psnr", "ssim") for t in TYPES}
    scores.update(psnr_avg=avg, ssim_avg=0.9)
    return {"row": row, "seed": seed, "scores": scores, "params": 2e6, "gmacs_256": 5.0, "wall_s_per_it": 0.5,
            "cpu_s_per_it": 0.4, "final_val_l1": final or {t: 0.05 for t in TYPES}}


def test_summary_noise_and_converge_together():
    inp = {**{f"psnr_{t}": 25.0 for t in TYPES}, **{f"ssim_{t}": 0.8 for t in TYPES}, "psnr_avg": 25.0, "ssim_avg": 0.8}
    val_input = {t: 0.1 for t in TYPES}
    uneven = {"day_streak": 0.02, "day_drop": 0.09, "night_streak": 0.05, "night_drop": 0.05}
    results = [_result("unirain-s", 0, 27.0), _result("unirain-s", 1, 27.2),
               _result("unirain-s uniform", 0, 27.05, uneven), _result("unirain-s uniform", 1, 27.15, uneven),
               _result("unirain-s dense", 0, 28.5), _result("unirain-s dense", 1, 28.7)]
    rows, sigma = bq.summarize(results, inp, val_input, TYPES)
    by = {r["config"]: r for r in rows}
    assert by["unirain-s"]["psnr_avg"] == pytest.approx(27.1) and by["unirain-s"]["gain_psnr"] == pytest.approx(2.1)
    assert by["unirain-s"]["seed_range_psnr"] == pytest.approx(0.2)
    assert sigma == pytest.approx(math.sqrt((0.02 + 0.005 + 0.02) / 3))
    assert by["unirain-s"]["val_drop_std"] == pytest.approx(0.0)  # every type dropped by half
    assert by["unirain-s uniform"]["val_drop_std"] > 0.2
    lines = bq.noise_lines(rows, sigma)
    assert any("uniform" in line and "within noise" in line for line in lines)
    assert any("dense" in line and "beyond noise" in line for line in lines)
    assert "| input (no deraining) |" in bq.format_table(rows, inp, TYPES)


def test_smoke_run(tmp_path):
    report = bq.main(["--small", "--out", str(tmp_path), "--rows", "unirain-s"])
    assert [r["config"] for r in report["rows"]] == ["unirain-s"]
    row = report["rows"][0]
    assert row["params_M"] > 0 and row["gmacs_256"] > 0 and 0 < row["psnr_avg"] < 60
    assert (tmp_path / "quality.md").read_text().count("| unirain-s |") == 1
    again = bq.main(["--small", "--out", str(tmp_path), "--rows", "unirain-s"])  # resumes: nothing retrained
    assert again["runs"][0]["scores"] == report["runs"][0]["scores"]


def test_a_changed_recipe_retrains_instead_of_reading_back(tmp_path):
    first = bq.main(["--small", "--out", str(tmp_path), "--rows", "unirain-s"])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"train": {**yaml.safe_load((bq.ROOT / "configs/demo.yaml").read_text())["train"],
                                                "lr": 0.01}}))
    second = bq.main(["--small", "--out", str(tmp_path), "--rows", "unirain-s", "--recipe", str(recipe)])
    assert second["runs"][0]["scores"] != first["runs"][0]["scores"]
