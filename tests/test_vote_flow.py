"""The vote and select stage flows on the tiny LLaVA judges: cascade, cache across runs, threshold
changes, fail-fast on an unreachable server."""
from __future__ import annotations

import shutil

import pandas as pd
import pytest

from data_manifests import RunLayout, get_schema, read_manifest, write_shard
from tasks.config import IngestConfig, ModelRef, RunConfig, VoteConfig
from tasks.stage import write_state

SHARDS = IngestConfig(num_shards=2, min_side=32)


def vote_flow(run: str, judges, vote: VoteConfig) -> dict:
    from flows.stage import run_stage_flow

    return run_stage_flow("vote", run, RunConfig(ingest=SHARDS, models={"judges": judges}, vote=vote))


def select_flow(run: str, threshold: float) -> dict:
    from flows.stage import run_stage_flow

    return run_stage_flow("select", run, RunConfig(ingest=SHARDS), threshold=threshold)


@pytest.fixture(scope="module")
def voted_run(tmp_path_factory, tiny_models, prefect_harness):
    """A real ingest of synthetic pairs and gallery; retrieval written directly (any reference will do
    for the judges), then one vote run."""
    from flows.stage import run_stage_flow
    from tasks.offline.synth import synthesize_gallery, synthesize_paired

    root = tmp_path_factory.mktemp("vote")
    synthesize_paired(root / "paired", per_type=3, seed=5, size=(64, 64))
    synthesize_gallery(root / "gallery", n=4, seed=6, size=(64, 64))
    run = RunLayout.at(root / "run")
    run_stage_flow("ingest", run.root, RunConfig(sources=[f"unirain={root / 'paired'}"], gallery=[str(root / "gallery")],
                                                 ingest=SHARDS))
    cands = read_manifest(run.manifest("candidates"), "candidates").sort_values("pair_id", ignore_index=True)
    gallery = sorted(read_manifest(run.manifest("gallery"), "gallery")["image_id"])
    refs = [gallery[i % len(gallery)] for i in range(len(cands))]
    write_shard(pd.DataFrame({"pair_id": cands["pair_id"], "ref_id": refs, "text_l2": 0.5, "image_cos": 0.7,
                              "ssim": 0.4, "semantic_ids": [[r] for r in refs], "visual_ids": [[r] for r in refs]}),
                run.manifest("retrieval"), "part-00000.parquet", get_schema("retrieval"))
    write_state(run, "retrieve", {"generation": "retrieval-1"})  # as if the retrieve stage had finished
    totals = vote_flow(str(run.root), tiny_models.judges, VoteConfig())
    return run, totals, tiny_models


def votes_of(run: RunLayout) -> pd.DataFrame:
    return read_manifest(run.manifest("votes"), "votes").sort_values(["pair_id", "judge"], ignore_index=True)


def test_first_vote_asks_each_question_once_with_the_cascade(voted_run):
    from tasks.vote.judge_cache import JudgeCache

    run, totals, models = voted_run
    votes = votes_of(run)
    n_pairs = 12
    assert votes["pair_id"].nunique() == n_pairs and totals["rejected"] == 0
    per_pair = votes.groupby("pair_id").size()
    assert per_pair.between(2, 3).all()  # the first two judges always, the third only to break a tie
    assert totals["model_calls"] == len(votes) and totals["cache_hits"] == 0
    assert totals["questions"] == len(votes)
    assert votes["p_real"].between(0, 1).all() and (votes["vote"] == (votes["p_real"] >= 0.5)).all()
    # the third judge was asked exactly where the first two disagreed
    first_two = votes[votes["judge_model"] != models.judges[2].name].groupby("pair_id")["vote"].nunique()
    assert sorted(per_pair[per_pair == 3].index) == sorted(first_two[first_two == 2].index)
    with JudgeCache(run) as cache:
        assert cache.count() == len(votes)
    # each row names its judge by the short name reports use (the tiny judges' folders), the id beside it
    assert set(votes["judge_model"]) <= {j.name for j in models.judges}
    assert (votes["judge"] == votes["judge_model"].map(lambda m: m.rsplit("/", 1)[-1])).all()
    assert (votes["judge"] == "judge_a").any()


def test_rerun_after_losing_shards_makes_no_model_call(voted_run):
    run, _, models = voted_run
    before = votes_of(run)
    shutil.rmtree(run.manifest("votes"))
    totals = vote_flow(str(run.root), models.judges, VoteConfig())
    assert totals["redone"] == 2 and totals["reasons"] == {"missing": 2}
    assert totals["model_calls"] == 0 and totals["cache_hits"] == len(before)
    pd.testing.assert_frame_equal(votes_of(run), before)
    again = vote_flow(str(run.root), models.judges, VoteConfig())
    assert again["skipped"] == 2 and again["redone"] == 0 and "model_calls" not in again


def test_new_threshold_asks_only_the_skipped_judges_and_matches_the_full_panel(voted_run, tmp_path):
    from tasks.select.stage import exhaustiveness

    run, _, models = voted_run
    base = votes_of(run)
    cut = select_flow(str(run.root), 0.55)  # a re-cut first: may need skipped judges
    assert cut["distilled"] + cut["voted_out"] + cut["judge_error"] + cut["undecided"] == 12
    assert cut["undecided"] == cut["needs_skipped_judge"]
    # vote again at 0.55: cached answers reused, only the judge the cascade now needs is called
    totals = vote_flow(str(run.root), models.judges, VoteConfig(threshold=0.55))
    assert totals["redone"] == 2 and "vote.threshold 0.5 -> 0.55" in totals["why"]
    new = votes_of(run)
    assert totals["model_calls"] == len(new) - len(base.merge(new[["pair_id", "judge"]]))
    assert totals["model_calls"] <= 12
    cascade = select_flow(str(run.root), 0.55)
    assert cascade["needs_skipped_judge"] == 0 and cascade["missing"] == cascade["duplicated"] == 0
    decided = read_manifest(run.manifest("distilled"), "distilled")
    # the same run voted by the full panel (no cascade) gives the same distilled pairs
    full = RunLayout.at(tmp_path / "full")
    for part in ("manifests", "cache", "state", "run.json"):
        (shutil.copytree if (run.root / part).is_dir() else shutil.copy)(run.root / part, full.root / part)
    vote_flow(str(full.root), models.judges, VoteConfig(threshold=0.55, cascade=False))
    assert votes_of(full).groupby("pair_id").size().eq(3).all()
    select_flow(str(full.root), 0.55)
    full_decided = read_manifest(full.manifest("distilled"), "distilled")
    assert sorted(full_decided["pair_id"]) == sorted(decided["pair_id"])
    assert exhaustiveness(full) == {"missing": [], "duplicated": [], "unknown": []}
    for name in ("funnel.md", "votes.md", "p_real.png", "retrieval_scores.png"):
        assert (run.reports / name).is_file()


def test_unreachable_judge_server_fails_at_start_naming_it(voted_run):
    from tasks.vote.judges import JudgeUnavailable

    run, _, models = voted_run
    dead = ModelRef(backend="vllm", name="judge-x", options={"base_url": "http://127.0.0.1:9/v1"})
    before = {p.name: p.read_bytes() for p in run.manifest("votes").glob("*.parquet")}
    with pytest.raises(JudgeUnavailable, match=r"127\.0\.0\.1:9"):
        vote_flow(str(run.root), [*models.judges[:2], dead], VoteConfig(timeout_s=2))
    # it failed before touching anything
    assert before and {p.name: p.read_bytes() for p in run.manifest("votes").glob("*.parquet")} == before
