"""Resuming a distilled run by fingerprints: what each config change redoes (that stage and the later
ones, never an earlier one), an unchanged rerun that redoes nothing, a damaged shard, a run whose
shard count disagrees with the config, a relocated run, other Parquet readers, no pickles on disk."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from data_manifests import RunLayout, read_manifest, shard_files
from tasks.pipeline import STAGE_ORDER


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from tasks.offline.synth import synthesize_gallery, synthesize_paired

    root = tmp_path_factory.mktemp("rerun-data")
    synthesize_paired(root / "paired", per_type=2, seed=21, size=(64, 64))
    synthesize_gallery(root / "gallery", n=5, seed=22, size=(64, 64))
    return root


def write_config(path: Path, tiny_models, data: Path, **changes) -> Path:
    cfg = yaml.safe_load(tiny_models.config_path.read_text())
    cfg.update(sources=[f"unirain={data / 'paired'}"], gallery=[str(data / "gallery")])
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        cfg.setdefault(section, {})[key] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


def redone(results: dict) -> dict[str, int]:
    return {name: results[name]["redone"] for name in STAGE_ORDER if name in results}


def distill(run: Path, config: Path) -> dict:
    from flows.distill import distill_flow

    return distill_flow(run=str(run), config=str(config))


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, tiny_models, data, prefect_harness):
    root = tmp_path_factory.mktemp("rerun")
    started = time.time()
    first = distill(root / "run", write_config(root / "base.yaml", tiny_models, data))
    return root, root / "run", first, started


def test_first_run_does_everything_and_an_unchanged_rerun_nothing(distilled, tiny_models, data):
    root, run, first, _ = distilled
    assert all(n > 0 for n in redone(first).values()) and list(first) == list(STAGE_ORDER)
    stamps = {p: p.stat().st_mtime_ns for p in run.glob("manifests/*/*.parquet")}
    again = distill(run, root / "base.yaml")
    assert redone(again) == dict.fromkeys(STAGE_ORDER, 0)
    assert all("up to date" in again[name]["line"] for name in STAGE_ORDER)
    assert "model_calls" not in again["vote"]  # no judge asked, not even from the cache
    assert stamps == {p: p.stat().st_mtime_ns for p in run.glob("manifests/*/*.parquet")}


def test_the_cli_rerun_of_a_finished_run_only_checks(distilled, capsys):
    from flows.cli import main

    root, run, _, _ = distilled
    states_before = len(list((run / "state").glob("*.json")))
    assert main(["distill", "--config", str(root / "base.yaml"), "--run", str(run)]) == 0
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines() if "up to date" in line] == list(STAGE_ORDER)
    assert "redid" not in out and len(list((run / "state").glob("*.json"))) == states_before


@pytest.mark.parametrize("change, first_redone", [
    ({"caption__max_new_tokens": 6}, "caption"),
    ({"retrieval__k_visual": 2}, "retrieve"),
    ({"retrieval__ssim_size": 64}, "retrieve"),
    ({"index__kind": "hnsw"}, "retrieve"),  # the indexes are rebuilt, the embeddings are not redone
    ({"vote__threshold": 0.6}, "vote"),
    ({"select__min_ssim": -0.5}, "select"),
])
def test_a_config_change_redoes_that_stage_and_the_later_ones_only(distilled, tiny_models, data, tmp_path,
                                                                  change, first_redone):
    root, run, _, _ = distilled
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(".prefect"), copy_function=shutil.copy2)
    config = write_config(tmp_path / "changed.yaml", tiny_models, data, **change)
    results = distill(copy, config)
    cut = STAGE_ORDER.index(first_redone)
    counts = redone(results)
    assert all(counts[name] == 0 for name in STAGE_ORDER[:cut]), counts
    assert all(counts[name] > 0 for name in STAGE_ORDER[cut:]), counts
    key = next(iter(change)).replace("__", ".")
    assert key in results[first_redone]["why"]
    if key.startswith("index."):
        assert results["embed"]["index_built"] == 1


def test_a_damaged_shard_is_redone_and_named(distilled, tiny_models, data, tmp_path):
    root, run, _, _ = distilled
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(".prefect"), copy_function=shutil.copy2)
    bad = shard_files(copy / "manifests" / "captions")[0]
    bad.write_bytes(bad.read_bytes()[:100])
    results = distill(copy, root / "base.yaml")
    assert results["ingest"]["redone"] == 0
    assert results["caption"]["redone"] == 1 and results["caption"]["reasons"] == {"unreadable": 1}
    assert str(bad) in results["caption"]["line"]
    assert all(results[name]["redone"] > 0 for name in STAGE_ORDER[STAGE_ORDER.index("caption"):])  # caption changed: later stages redone
    before = read_manifest(run / "manifests" / "distilled", "distilled").sort_values("pair_id", ignore_index=True)
    after = read_manifest(copy / "manifests" / "distilled", "distilled").sort_values("pair_id", ignore_index=True)
    pd.testing.assert_frame_equal(before, after)


def test_every_manifest_folder_reads_with_pandas_polars_and_duckdb(distilled):
    import duckdb
    import polars as pl

    _, run, _, _ = distilled
    folders = sorted(p for p in (run / "manifests").iterdir() if p.is_dir())
    assert {p.name for p in folders} >= {"candidates", "gallery", "captions", "embeddings", "retrieval", "votes",
                                         "distilled", "rejects"}
    for folder in folders:
        assert all(p.suffix == ".parquet" for p in folder.iterdir()), folder  # no bookkeeping files
        n = len(pd.read_parquet(folder))
        assert len(pl.read_parquet(folder)) == n, folder
        assert duckdb.execute(f"select count(*) from read_parquet('{folder}/*.parquet')").fetchone()[0] == n, folder


def test_no_pickles_on_disk(distilled):
    """Prefect persists results only as JSON; stage tasks keep none (resume is by fingerprint)."""
    _, run, _, started = distilled
    places = [run, Path(os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"])]
    scanned = 0
    for place in places:
        for path in (p for p in place.rglob("*") if p.is_file() and p.stat().st_mtime >= started):
            head = path.read_bytes()[:4096]
            scanned += 1
            assert not (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")), path
            assert b"cloudpickle" not in head and b'"pickle"' not in head, path
    assert scanned > 0
    # the distill flow's own result (what run_deployment reads back) is persisted, as JSON
    results = [p for p in places[1].rglob("*") if p.is_file() and p.stat().st_mtime >= started]
    assert any(set(json.loads(p.read_text())) >= set(STAGE_ORDER) for p in results)


def test_ingest_then_distill_with_another_shard_count_is_refused(tmp_path, tiny_models, data, capsys, prefect_harness):
    from flows.cli import main

    run = tmp_path / "run"
    assert main(["ingest", "--run", str(run), "--source", f"unirain={data / 'paired'}",
                 "--gallery", str(data / "gallery")]) == 0  # no config: a new run of 16 shards
    capsys.readouterr()
    config = write_config(tmp_path / "c.yaml", tiny_models, data)  # make-tiny's config says num_shards: 2
    assert main(["distill", "--config", str(config), "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert "cut into 16 shards" in err and "sets ingest.num_shards: 2" in err and "Traceback" not in err
    assert not (run / "manifests" / "captions").exists()  # refused before any stage
    # a config that does not set num_shards adopts the run's
    plain = yaml.safe_load(config.read_text())
    del plain["ingest"]["num_shards"]
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(plain))
    from flows.distill import distill_flow

    results = distill_flow(run=str(run), config=str(tmp_path / "plain.yaml"), until="ingest")
    assert results["ingest"]["shards"] == 16 and len(shard_files(run / "manifests" / "candidates")) == 16
    assert "ingest.min_side 64 -> 32" in results["ingest"]["why"]  # the CLI ingested with the default min_side


def test_a_relocated_run_reads_and_resumes_after_one_command(distilled, tiny_models, data, tmp_path, capsys):
    from flows.cli import main
    from unirain_model.data import DataError, read_pairs

    root, run, _, _ = distilled
    moved_data, moved_run = tmp_path / "elsewhere" / "data", tmp_path / "elsewhere" / "run"
    shutil.copytree(data, moved_data, copy_function=shutil.copy2)  # mtimes kept, as rsync -a / cp -a do
    shutil.copytree(run, moved_run, ignore=shutil.ignore_patterns(".prefect"), copy_function=shutil.copy2)
    layout = RunLayout.at(moved_run)
    info = layout.info()
    info["roots"] = {k: str(tmp_path / "gone" / k) for k in info["roots"]}  # the old machine's folders
    layout.marker.write_text(json.dumps(info))
    with pytest.raises(DataError, match="root of source 'unirain' is missing: .*unirain relocate"):
        read_pairs(moved_run / "manifests" / "distilled")
    assert main(["relocate", str(moved_run), "--root", f"unirain={moved_data / 'paired'}",
                 "--root", f"gallery={moved_data / 'gallery'}"]) == 0
    pairs = read_pairs(moved_run / "manifests" / "distilled")
    assert len(pairs) > 0 and pairs["rainy_path"].map(lambda p: p.startswith(str(moved_data))).all()
    assert pairs["clean_path"].map(os.path.isfile).all()
    # the same data under the new roots: nothing to redo
    results = distill(moved_run, write_config(tmp_path / "moved.yaml", tiny_models, moved_data))
    assert redone(results) == dict.fromkeys(STAGE_ORDER, 0)


def test_prefect_yaml_and_the_cli_follow_the_stage_order():
    from flows.cli import app_command
    from flows.deployments import stage_deployments

    root = Path(__file__).resolve().parents[1]
    declared = yaml.safe_load((root / "prefect.yaml").read_text())["deployments"]
    stages = [{k: d.get(k) for k in ("name", "entrypoint", "description", "parameters")}
              for d in declared if "stage" in d.get("tags", [])]
    assert stages == stage_deployments()
    assert [d["name"] for d in stages] == list(STAGE_ORDER)
    from flows.commands.distill import Stage

    assert tuple(s.value for s in Stage) == STAGE_ORDER  # the choices of `unirain distill --until`
    assert app_command().commands["distill"].params
