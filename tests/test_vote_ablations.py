"""The paper's two data ablations, each from its file in configs/ablations/ (which `extends` paper.yaml),
end to end on the tiny offline models: "VLM only (no RAG)" (`vote.reference: false`) and "no
generation stage" (`vote.enabled: false`). Stages run in-process through the one runner (`run_stage`);
the stages before vote are shared, since no vote setting is in their fingerprints."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from data_manifests import RunLayout, read_manifest, shard_files
from tasks.pipeline import STAGE_ORDER

REPO = Path(__file__).resolve().parents[1]
ABLATIONS = REPO / "configs" / "ablations"


def ablation_config(folder: Path, name: str, tiny_models, data: Path, **extra) -> Path:
    """`configs/ablations/<name>.yaml` with the tiny models and the synthetic data laid over it."""
    tiny = yaml.safe_load(tiny_models.config_path.read_text())
    tiny.pop("vote", None)  # keep the ablation's vote section (the tiny config's has the defaults)
    cfg = {"extends": str(ABLATIONS / f"{name}.yaml"), **tiny, "sources": [f"unirain={data / 'paired'}"],
           "gallery": [str(data / "gallery")], "task_runner": {"kind": "thread", "workers": 1}, **extra}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_stages(run_dir: Path, config: Path, stages) -> dict:
    from tasks.config import load_run_config
    from tasks.stage import make_stage, prepare_run, run_stage

    cfg = load_run_config(config)
    run, n = prepare_run(run_dir, cfg)
    return {name: run_stage(make_stage(name, cfg, n), run) for name in stages}


BEFORE_VOTE = STAGE_ORDER[:STAGE_ORDER.index("vote")]


@pytest.fixture(scope="module")
def retrieved(tmp_path_factory, tiny_models, one_torch_thread):
    """A run through retrieve (shared by both ablations) and the data it came from."""
    from tasks.offline.synth import synthesize_gallery, synthesize_paired

    root = tmp_path_factory.mktemp("ablations")
    synthesize_paired(root / "data" / "paired", per_type=2, seed=21, size=(64, 64))
    synthesize_gallery(root / "data" / "gallery", n=4, seed=22, size=(64, 64))
    config = ablation_config(root, "no_generation_stage", tiny_models, root / "data")
    run_stages(root / "run", config, BEFORE_VOTE)
    return root


def copy_run(retrieved: Path, dest: Path) -> RunLayout:
    shutil.copytree(retrieved / "run", dest, copy_function=shutil.copy2)
    return RunLayout.at(dest)


def test_the_ablation_files_load_as_the_paper_config_with_one_change():
    from tasks.config import load_run_config

    paper = load_run_config(REPO / "configs" / "paper.yaml")
    for name, change in (("vlm_only_no_rag", {"reference": False}), ("no_generation_stage", {"enabled": False})):
        cfg = load_run_config(ABLATIONS / f"{name}.yaml")
        assert cfg.vote == paper.vote.model_copy(update=change), name
        assert cfg.models == paper.models and cfg.train == paper.train and cfg.ingest == paper.ingest
    assert sorted(p.stem for p in ABLATIONS.glob("*.yaml")) == ["no_generation_stage", "vlm_only_no_rag"]


def test_no_generation_stage_keeps_what_retrieval_passed_without_any_judge(retrieved, tiny_models, tmp_path):
    from tasks.select.stage import exhaustiveness

    run = copy_run(retrieved, tmp_path / "run")
    # a judge that does not exist: it must not even be looked at
    config = ablation_config(tmp_path, "no_generation_stage", tiny_models, retrieved / "data",
                             models={**yaml.safe_load(tiny_models.config_path.read_text())["models"],
                                     "judges": [{"backend": "transformers", "name": str(tmp_path / "no_judge")}]})
    reports = run_stages(run.root, config, STAGE_ORDER)
    assert all(reports[s].redone == 0 for s in BEFORE_VOTE)  # no vote setting is in their fingerprints
    assert reports["vote"].totals.get("model_calls", 0) == 0 and reports["vote"].redone == 2
    assert read_manifest(run.manifest("votes"), "votes").empty
    assert not (run.cache / "judges").exists() and not (run.reports / "vote_calls.jsonl").exists()
    retrieval = read_manifest(run.manifest("retrieval"), "retrieval")
    distilled = read_manifest(run.manifest("distilled"), "distilled")
    assert len(distilled) and set(distilled["pair_id"]) == set(retrieval["pair_id"])
    assert (distilled["n_votes"] == 0).all() and (distilled["n_yes"] == 0).all()
    assert (distilled.set_index("pair_id")["ref_id"] == retrieval.set_index("pair_id")["ref_id"]).all()
    assert exhaustiveness(run) == {"missing": [], "duplicated": [], "unknown": []}
    assert "Voting was off" in (run.reports / "votes.md").read_text()
    # the optional limits still cut on retrieval scores
    limit = float(retrieval["ssim"].median())
    config = ablation_config(tmp_path, "no_generation_stage", tiny_models, retrieved / "data", select={"min_ssim": limit})
    again = run_stages(run.root, config, STAGE_ORDER)
    assert again["vote"].redone == 0 and again["select"].redone > 0
    distilled = read_manifest(run.manifest("distilled"), "distilled")
    assert set(distilled["pair_id"]) == set(retrieval.loc[retrieval["ssim"] >= limit, "pair_id"])
    rejects = read_manifest(run.rejects, "rejects")
    assert (rejects["reason"] == "below_threshold").sum() == (retrieval["ssim"] < limit).sum() > 0


def test_vlm_only_asks_about_the_candidate_alone_and_needs_no_retrieval_row(retrieved, tiny_models, tmp_path):
    from tasks.select.stage import exhaustiveness
    from tasks.vote.judge_cache import JudgeCache
    from tasks.vote.judges.prompt import PROMPT_VERSION_NO_REFERENCE, question_version
    from tasks.vote.stage import vote_items

    run = copy_run(retrieved, tmp_path / "run")
    config = ablation_config(tmp_path, "vlm_only_no_rag", tiny_models, retrieved / "data")
    reports = run_stages(run.root, config, STAGE_ORDER)
    votes = read_manifest(run.manifest("votes"), "votes")
    cands = read_manifest(run.manifest("candidates"), "candidates")
    assert set(votes["pair_id"]) == set(cands["pair_id"])  # every pair voted, each without a reference
    types = votes["pair_id"].map(cands.set_index("pair_id")["rain_type"])
    assert (votes["ref_id"] == "").all()
    assert (votes["prompt_version"] == types.map(lambda t: question_version(t, reference=False))).all()
    assert votes["prompt_version"].str.startswith(PROMPT_VERSION_NO_REFERENCE).all()
    assert set(votes["judge"]) <= {"judge_a", "judge_b", "judge_c"}
    assert reports["vote"].totals["model_calls"] == len(votes)
    with JudgeCache(run) as cache:
        assert cache.count() == len(votes)
    distilled = read_manifest(run.manifest("distilled"), "distilled")
    assert (distilled["ref_id"] == "").all()
    rejects = read_manifest(run.rejects, "rejects")
    assert not (rejects["reason"] == "no_reference").any()
    assert exhaustiveness(run) == {"missing": [], "duplicated": [], "unknown": []}
    assert "saw each candidate alone" in (run.reports / "votes.md").read_text()
    # voting reads no retrieval row: without the retrieval manifest it has the same items
    before = vote_items(run, reference=False)
    shutil.rmtree(run.manifest("retrieval"))
    pd.testing.assert_frame_equal(vote_items(run, reference=False), before)
    assert len(before) == len(cands)


def test_a_no_reference_question_shows_the_judge_one_image(tiny_models):
    from tasks.vote.judges import JudgeRequest, make_judge
    from tasks.vote.judges.prompt import PROMPT_TEXT, prompt_text

    judge = make_judge(tiny_models.judges[0])
    with_ref = judge.prompt_for(JudgeRequest("r", "ref.png", "c", "cand.png"))
    alone = judge.prompt_for(JudgeRequest("", None, "c", "cand.png"))
    assert with_ref.count("<image>") == 2 and alone.count("<image>") == 1
    assert PROMPT_TEXT in with_ref and prompt_text(reference=False) in alone and "first image" not in alone


def test_select_limits_with_vlm_only_are_refused_naming_the_key(tiny_models, tmp_path):
    from tasks.config import ConfigError, load_run_config

    config = ablation_config(tmp_path, "vlm_only_no_rag", tiny_models, tmp_path, select={"min_ssim": 0.3})
    with pytest.raises(ConfigError, match="select.min_ssim.*vote.reference: false"):
        load_run_config(config)


def test_extends_reads_each_file_from_its_own_folder_and_refuses_loops(tmp_path):
    from tasks.config import ConfigError, load_run_config

    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "data").mkdir()
    (tmp_path / "base" / "b.yaml").write_text(
        "gallery: [data]\nvote: {threshold: 0.7, cascade: false}\n"
        "models: {embedder: {backend: open_clip, name: ViT-L-14, pretrained: openai}}\n")
    (tmp_path / "child.yaml").write_text("extends: base/b.yaml\nvote: {reference: false}\n"
                                         "models: {embedder: {backend: open_clip, name: ViT-B-32}}\n")
    cfg = load_run_config(tmp_path / "child.yaml")
    assert cfg.gallery == [str(tmp_path / "base" / "data")]
    assert cfg.models.embedder.pretrained is None  # a model replaces the base's whole, never merges
    assert (cfg.vote.threshold, cfg.vote.cascade, cfg.vote.reference) == (0.7, False, False)
    (tmp_path / "loop.yaml").write_text("extends: loop2.yaml\n")
    (tmp_path / "loop2.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="loop"):
        load_run_config(tmp_path / "loop.yaml")
    (tmp_path / "missing.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml"):
        load_run_config(tmp_path / "missing.yaml")
