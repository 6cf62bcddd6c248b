"""The stage contract without Prefect or models: a toy stage through `tasks.stage.run_stage`, and the
run's invariants (shard count, layout version, source roots) in `data_manifests.run`."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from data_manifests import RunError, RunLayout, absolute_paths, get_schema, read_manifest, shard_files, write_shard
from data_manifests.ids import bytes_digest
from tasks.config import CaptionConfig, RunConfig
from tasks.pipeline import spec
from tasks.stage import Stage, read_state, run_stage, stage_status, write_state

SHARDS = 3


class ToyCaptions(Stage):
    """Captions from the candidates' paths: the caption stage's outputs, no model."""

    spec = spec("caption")
    upstream = ("ingest",)
    calls: list[int] = []
    setups: list[int] = []

    def config_section(self):
        return {"caption.max_new_tokens": self.cfg.caption.max_new_tokens}

    def model_id(self):
        return "toy-model"

    def items(self, run):
        cands = read_manifest(run.manifest("candidates"), "candidates", columns=["pair_id", "rainy_path"])
        return cands.rename(columns={"pair_id": "item_id"})

    def setup_key(self):
        return "toy-model"  # the model does not depend on max_new_tokens: load it once

    def setup(self):
        ToyCaptions.setups.append(1)
        self.loaded = True

    def process_shard(self, run, shard, rows):
        assert self.loaded
        ToyCaptions.calls.append(shard)
        n = self.cfg.caption.max_new_tokens
        kept = [{"item_id": r.item_id, "kind": "candidate", "caption": r.rainy_path[:n], "model": "toy-model"}
                for r in rows.itertuples()]
        return kept, []


def make_run(root, n=12) -> RunLayout:
    run = RunLayout.at(root).create(SHARDS)
    ids = [bytes_digest(b"%d" % i) for i in range(n)]
    write_shard(pd.DataFrame({
        "pair_id": ids, "source": "toy", "rain_type": "day_streak", "rainy_path": [f"r/{i}.png" for i in range(n)],
        "clean_path": [f"c/{i}.png" for i in range(n)], "width": 64, "height": 64, "rainy_id": ids, "clean_id": ids,
        "rain_type_inferred": False}), run.manifest("candidates"), "part-00000.parquet", get_schema("candidates"))
    write_state(run, "ingest", {"generation": "ingest-1"})
    return run


def toy(tokens=20) -> ToyCaptions:
    return ToyCaptions(RunConfig(caption=CaptionConfig(max_new_tokens=tokens)), SHARDS)


@pytest.fixture(autouse=True)
def _reset_calls():
    ToyCaptions.calls.clear()


def test_first_run_does_every_shard_and_an_unchanged_rerun_none(tmp_path):
    run = make_run(tmp_path)
    first = run_stage(toy(), run)
    assert (first.redone, first.skipped, first.reasons) == (SHARDS, 0, {"missing": SHARDS})
    assert sorted(ToyCaptions.calls) == list(range(SHARDS)) and first.totals["kept"] == 12
    stamps = {p: p.stat().st_mtime_ns for p in run.root.glob("manifests/*/*.parquet")}
    generation = read_state(run, "caption")["generation"]
    ToyCaptions.calls.clear()
    again = run_stage(toy(), run)
    assert (again.redone, again.skipped) == (0, SHARDS) and ToyCaptions.calls == []
    assert "skipped 3 of 3" in again.line() and "up to date" in again.line()
    assert stamps == {p: p.stat().st_mtime_ns for p in run.root.glob("manifests/*/*.parquet")}
    assert read_state(run, "caption")["generation"] == generation  # kept when nothing changed: later stages stay current


def test_a_config_change_redoes_every_shard_and_says_which_key(tmp_path):
    run = make_run(tmp_path)
    run_stage(toy(), run)
    generation = read_state(run, "caption")["generation"]
    setups = len(ToyCaptions.setups)
    report = run_stage(toy(tokens=3), run)
    assert len(ToyCaptions.setups) == setups  # the loaded model is reused, with the new config
    assert report.redone == SHARDS and report.reasons == {"fingerprint": SHARDS}
    assert "caption.max_new_tokens 20 -> 3" in report.line()
    assert read_manifest(run.manifest("captions"), "captions")["caption"].str.len().max() == 3
    assert read_state(run, "caption")["generation"] != generation  # later stages see a new input


def test_a_damaged_shard_is_redone_and_named(tmp_path):
    run = make_run(tmp_path)
    run_stage(toy(), run)
    bad = shard_files(run.manifest("captions"))[1]
    bad.write_bytes(bad.read_bytes()[:40])  # truncated: the footer is gone
    lost = run.rejects / "part-caption-00002.parquet"
    lost.unlink()
    ToyCaptions.calls.clear()
    report = run_stage(toy(), run)
    assert sorted(ToyCaptions.calls) == [1, 2]
    assert report.reasons == {"unreadable": 1, "missing": 1}
    assert str(bad) in report.line()
    assert len(read_manifest(run.manifest("captions"), "captions")) == 12


def test_an_upstream_redo_makes_the_stage_and_every_later_one_stale(tmp_path):
    run = make_run(tmp_path)
    run_stage(toy(), run)
    write_state(run, "embed", {"generation": "embed-1", "fingerprint": "x"})
    write_state(run, "ingest", {"generation": "ingest-2"})  # ingest was redone
    report = run_stage(toy(), run)
    assert report.redone == SHARDS and "ingest was redone" in report.why
    assert read_state(run, "embed")["stale"].startswith("caption redone")
    assert {s["stage"]: s["status"] for s in stage_status(run)}["embed"] == "stale"


def test_a_stage_whose_upstream_never_finished_is_refused(tmp_path):
    run = make_run(tmp_path)
    write_state(run, "ingest", {"generation": None})  # started, crashed
    with pytest.raises(RunError, match="needs the ingest stage .* to have finished"):
        run_stage(toy(), run)
    assert not run.manifest("captions").exists()


def test_shard_count_belongs_to_the_run(tmp_path):
    run = RunLayout.at(tmp_path / "run").create(16)
    assert run.resolve_num_shards(16, explicit=True) == 16
    assert run.resolve_num_shards(2, explicit=False) == 16  # a config that does not say adopts the run's
    with pytest.raises(RunError) as err:
        run.resolve_num_shards(2, explicit=True, origin="c.yaml")
    message = str(err.value)
    assert "16 shards" in message and "c.yaml sets ingest.num_shards: 2" in message and "new run folder" in message
    assert RunLayout.at(tmp_path / "new").resolve_num_shards(4, explicit=True) == 4
    assert json.loads((tmp_path / "run" / "run.json").read_text())["num_shards"] == 16


def test_a_run_of_an_older_layout_is_refused_clearly(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"created": "2026-01-01T00:00:00Z", "layout": 1}))
    with pytest.raises(RunError, match="run layout 1 .* start a new run folder"):
        RunLayout.at(tmp_path).info()


def test_relocate_and_absolute_paths(tmp_path):
    data = tmp_path / "data"
    (data / "r").mkdir(parents=True)
    run = make_run(tmp_path / "run")
    run.set_roots({"toy": data})
    frame = read_manifest(run.manifest("candidates"), "candidates")
    absolute = run.absolute_paths(frame, ("rainy_path", "clean_path"))
    assert absolute["rainy_path"].iloc[0] == str(data.resolve() / "r" / "0.png")
    # the training loader's entry point finds the run from the manifest folder
    pd.testing.assert_frame_equal(absolute_paths(frame, run.manifest("candidates")), absolute)
    assert absolute_paths(frame, tmp_path / "not-a-run") is frame
    moved = tmp_path / "moved"
    shutil.move(str(data), str(moved))
    with pytest.raises(RunError, match=r"root of source 'toy' is missing: .*unirain relocate .* --root toy=NEW_PATH"):
        run.absolute_paths(frame, ("rainy_path", "clean_path"))
    with pytest.raises(RunError, match="no source named 'other'"):
        run.relocate({"other": moved})
    with pytest.raises(RunError, match="not found"):
        run.relocate({"toy": tmp_path / "nowhere"})
    assert run.relocate({"toy": moved}) == {"toy": (str(data.resolve()), str(moved.resolve()))}
    assert run.absolute_paths(frame, ("rainy_path",))["rainy_path"].iloc[0].startswith(str(moved.resolve()))
    info = json.loads(run.marker.read_text())
    info["roots"] = {}
    run.marker.write_text(json.dumps(info))
    with pytest.raises(RunError, match="source 'toy' has no root"):
        run.absolute_paths(frame, ("rainy_path",))


def test_relocate_command(tmp_path, capsys):
    from flows.cli import main

    data, moved = tmp_path / "data", tmp_path / "moved"
    data.mkdir()
    moved.mkdir()
    run = make_run(tmp_path / "run")
    run.set_roots({"toy": data})
    assert main(["relocate", str(run.root), "--root", f"toy={moved}"]) == 0
    assert f"toy: {data.resolve()} -> {moved.resolve()}" in capsys.readouterr().out
    assert main(["relocate", str(run.root), "--root", f"other={moved}"]) == 2
    assert "no source named 'other'" in capsys.readouterr().err


def test_config_paths_are_read_from_the_config_folder(tmp_path, monkeypatch, capsys):
    from flows.cli import main
    from tasks.config import ConfigError, load_run_config

    conf = tmp_path / "conf"
    (conf / "models" / "clip").mkdir(parents=True)
    (conf / "model.yaml").write_text("type: unirain\n")
    (conf / "data").mkdir()
    text = ("gallery: [data]\n"
            "models:\n  captioner: {backend: blip, name: ./models/blip}\n"
            "  embedder: {backend: open_clip, name: 'local-dir:models/clip'}\n"
            "  judges: [{backend: transformers, name: llava-hf/llava-1.5-7b-hf}]\n"
            "train: {model: model.yaml}\n")
    (conf / "c.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)  # a working directory that is not the config's folder
    cfg = load_run_config(conf / "c.yaml")
    assert cfg.gallery == [str(conf / "data")]
    assert cfg.models.embedder.name == f"local-dir:{conf / 'models' / 'clip'}"
    assert cfg.models.judges[0].name == "llava-hf/llava-1.5-7b-hf"  # a hub id, kept
    assert cfg.train.model == str(conf / "model.yaml")
    (conf / "bad.yaml").write_text(text.replace("model.yaml", "missing.yaml"))
    with pytest.raises(ConfigError, match=f"train.model: not found: {conf / 'missing.yaml'}"):
        load_run_config(conf / "bad.yaml")
    # the captioner folder does not exist: refused before any stage, naming the resolved path
    assert main(["distill", "--config", str(conf / "c.yaml"), "--run", str(tmp_path / "run"), "--until", "caption"]) == 2
    assert f"models.captioner.name: local model not found: {conf / 'models' / 'blip'}" in capsys.readouterr().err
    assert not (tmp_path / "run" / "run.json").exists()  # (the CLI made only RUN/.prefect)


def test_a_manifest_of_an_older_schema_is_refused_with_what_to_do(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from data_manifests import ManifestError

    schema = get_schema("candidates")
    table = pa.table({c: pa.array([], schema.schema.field(c).type) for c in schema.columns})
    pq.write_table(table.replace_schema_metadata({b"unirain.manifest": b"candidates", b"unirain.schema_version": b"1"}),
                   tmp_path / "part-00000.parquet")
    with pytest.raises(ManifestError, match="version 1, this UniRain reads version 2; written by an older UniRain"):
        read_manifest(tmp_path, "candidates")
