"""`unirain ablate`: two variants × two iterations on a tiny synthetic manifest, the table, resume."""
from __future__ import annotations

import json
import warnings

import pandas as pd
import pytest
import yaml

from tests.test_train import TINY_MODEL, make_paper_folder
from unirain_model.ablation import INPUT_ROW, format_markdown, paper_table, resolve_variant
from unirain_model.config import ConfigError
from unirain_model.data import read_pairs

TYPES = ("day_streak", "day_drop", "night_streak", "night_drop")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def setup(tmp_path):
    data = make_paper_folder(tmp_path / "data", per_type=4)
    manifest = tmp_path / "manifest"
    manifest.mkdir()
    read_pairs(data).assign(width=48, height=48).to_parquet(manifest / "part-00000.parquet")
    for name, ffn in (("tiny-soft-hard", ("soft", "hard")), ("tiny-dense", ("dense", "dense"))):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({**TINY_MODEL, "encoder_ffn": ffn[0], "decoder_ffn": ffn[1]}))
    recipe = dict(iters=2, batch_size=4, crop=32, warmup_iters=1, eval_every=1, val_fraction=0.3, val_crop=32,
                  num_workers=0, log_every=1, ckpt_every=1, device="cpu", reweighting={"warmup_evals": 0})
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"train": {"model": "tiny-soft-hard.yaml", **recipe}}))
    return tmp_path, manifest, config


def test_ablate_two_variants_resumes_and_publishes(setup, prefect_harness, capsys):
    from flows.cli import main

    tmp, manifest, config = setup
    run = tmp / "run"
    argv = ["ablate", "--run", str(run), "--config", str(config), "--manifest", str(manifest), "--variants",
            f"{tmp / 'tiny-soft-hard.yaml'},{tmp / 'tiny-dense.yaml'}", "--data", str(tmp / "data")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(argv) == 0
    table = pd.read_csv(run / "reports/ablation.csv")
    assert list(table["config"]) == [INPUT_ROW, "tiny-soft-hard", "tiny-dense"]
    for t in TYPES:
        assert table[f"psnr_{t}"].between(5, 60).all() and table[f"ssim_{t}"].between(-1, 1).all()
    assert table["psnr_avg"].tolist() == pytest.approx(table[[f"psnr_{t}" for t in TYPES]].mean(axis=1).tolist())
    assert table.loc[0, "gain_psnr"] == 0
    md = (run / "reports/ablation.md").read_text()
    assert "| tiny-dense |" in capsys.readouterr().out  # the CLI prints the table
    assert "| tiny-dense |" in md and "day_streak PSNR / SSIM" in md
    for name in ("tiny-soft-hard", "tiny-dense"):  # each variant is its own training run
        assert json.loads((run / "ablation" / name / "checkpoints/latest.json").read_text())["iteration"] == 2

    # rerun: nothing retrained (the checkpoints stay), same table; more iterations resume from 2
    before = {p: p.stat().st_mtime_ns for p in (run / "ablation").rglob("*.safetensors")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(argv) == 0
        assert {p: p.stat().st_mtime_ns for p in (run / "ablation").rglob("*.safetensors")} == before
        pd.testing.assert_frame_equal(pd.read_csv(run / "reports/ablation.csv"), table)
        assert main([*argv, "--iters", "3"]) == 0
    assert json.loads((run / "ablation/tiny-dense/checkpoints/latest.json").read_text())["iteration"] == 3

    import asyncio

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from data_manifests import RunLayout
    from flows.artifacts import artifact_key

    key = artifact_key(RunLayout.at(run), "ablation")

    async def keys():
        async with get_client() as client:
            arts = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_=key)))
            return {a.key for a in arts}

    assert {key, key + "-md"} <= asyncio.run(keys())


def test_ablate_refuses_unknown_variants_before_training(setup, capsys):
    from flows.cli import main

    tmp, manifest, config = setup
    code = main(["ablate", "--run", str(tmp / "r"), "--config", str(config), "--manifest", str(manifest),
                 "--variants", "unirain-s,no-such-model"])
    assert code == 2 and "no-such-model" in capsys.readouterr().err
    assert not (tmp / "r" / "ablation").exists()  # (cli.main puts Prefect's home in RUN/.prefect first)


def test_variant_names_and_the_paper_table():
    assert resolve_variant("unirain-soft-soft").name == "unirain-soft-soft.yaml"
    with pytest.raises(ConfigError, match="nope"):
        resolve_variant("nope")
    frame = lambda v: pd.DataFrame({"rain_type": list(TYPES) * 2, "psnr": [v, v + 2] * 4,  # noqa: E731
                                    "ssim": [0.5] * 8})
    table = paper_table({INPUT_ROW: frame(20.0), "a": frame(25.0)})
    assert (table.loc[1, "psnr_day_streak"], table.loc[1, "psnr_day_drop"], table.loc[1, "psnr_avg"]) == (25.0, 27.0, 26.0)
    assert table.loc[1, "gain_psnr"] == 5.0
    assert "| a | " in format_markdown(table)
