"""Selection: every candidate exactly once, thresholds only here, a re-cut without any model call."""
from __future__ import annotations

import pandas as pd
import pytest

from data_manifests import RunLayout, read_manifest, write_shard, get_schema
from tasks.config import SelectConfig
from tasks.vote.judges import JUDGES, NO_MASS, Judge
from tasks.select.stage import exhaustiveness, select_run
from tasks.stage import write_state
from tasks.select.reports import fleiss_kappa, write_select_reports
from tasks.vote.stage import NO, VoteMeta, YES, write_votes

PANEL = ("judge_a", "judge_b", "judge_c")
T = 0.5


def pid(i: int) -> str:
    return f"{i:02d}" + "0" * 30


# pair -> {judge: p_real or an error string}; a missing judge was skipped by the cascade at T=0.5
VOTES = {
    4: {"judge_a": 0.7, "judge_b": 0.8},                      # yes; at 0.75 needs judge_c
    5: {"judge_a": 0.2, "judge_b": 0.3},                      # no
    6: {"judge_a": 0.7, "judge_b": 0.3, "judge_c": 0.6},      # yes by the third judge
    7: {"judge_a": NO_MASS, "judge_b": NO_MASS + " (x)"},     # two final abstentions: judge_error
    8: {"judge_a": 0.9, "judge_b": "timeout after 60 s", "judge_c": 0.8},  # yes despite a transient failure
    10: {"judge_a": 0.6, "judge_b": 0.4, "judge_c": NO_MASS},  # tie with a broken judge: judge_error
    11: {"judge_a": 0.55, "judge_b": 0.9},                    # yes; at 0.75 needs judge_c
}


def build_run(root, models: str = "") -> RunLayout:
    """13 candidates: 0 rejected at caption, 1 also named by an ingest `duplicate` reject, 2 rejected at
    retrieve (no_reference), 3 with a low SSIM, 9 undecided at the vote stage, 12 with no retrieval row."""
    run = RunLayout.at(root).create()
    n = 13
    write_shard(pd.DataFrame({
        "pair_id": [pid(i) for i in range(n)], "source": ["a" if i % 2 else "b" for i in range(n)],
        "rain_type": "day_streak", "rainy_path": [f"/r/{i}.png" for i in range(n)],
        "clean_path": [f"/c/{i}.png" for i in range(n)], "width": 64, "height": 64,
        "rainy_id": [f"r{i}" for i in range(n)], "clean_id": [f"c{i}" for i in range(n)], "rain_type_inferred": False,
    }), run.manifest("candidates"), "part-00000.parquet", get_schema("candidates"))
    write_shard(pd.DataFrame({"image_id": ["g0", "g1"], "source": "real", "path": ["/g/0.png", "/g/1.png"],
                              "width": 64, "height": 64}), run.manifest("gallery"), "part-00000.parquet", get_schema("gallery"))
    rej = lambda i, stage, reason: {"item_id": i, "stage": stage, "reason": reason, "detail": "x", "source": None, "path": None}  # noqa: E731
    write_shard(pd.DataFrame([rej("deadbeef", "ingest", "duplicate"), rej(pid(1), "ingest", "duplicate")]),
                run.rejects, "part-ingest-00000.parquet", get_schema("rejects"))
    write_shard(pd.DataFrame([rej(pid(0), "caption", "unreadable"), rej("g9", "caption", "unreadable")]),
                run.rejects, "part-caption-00000.parquet", get_schema("rejects"))
    write_shard(pd.DataFrame([rej(pid(2), "retrieve", "no_reference")]), run.rejects, "part-retrieve-00000.parquet",
                get_schema("rejects"))
    retrieved = [1, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    write_shard(pd.DataFrame({
        "pair_id": [pid(i) for i in retrieved], "ref_id": ["g0" if i % 2 else "g1" for i in retrieved],
        "text_l2": [0.5 + 0.01 * i for i in retrieved], "image_cos": 0.8, "ssim": [0.1 if i == 3 else 0.6 for i in retrieved],
        "semantic_ids": [["g0", "g1"]] * len(retrieved), "visual_ids": [["g0"]] * len(retrieved),
    }), run.manifest("retrieval"), "part-00000.parquet", get_schema("retrieval"))
    pairs = {1: {"judge_a": 0.9, "judge_b": 0.95}, 3: {"judge_a": 0.9, "judge_b": 0.95}, **VOTES}
    rows = []
    for i, answers in pairs.items():
        for judge, value in answers.items():
            p = value if isinstance(value, float) else None
            rows.append({"pair_id": pid(i), "ref_id": "g0", "judge": judge, "judge_model": models + judge, "p_real": p,
                         "vote": None if p is None else p >= T, "error": None if p is not None else value,
                         "prompt_version": "rain-realism-v1"})
    meta = VoteMeta(tuple(models + j for j in PANEL), T, True, "rain-realism-v1")  # model ids: `models` + name
    write_votes(run, 0, rows, [rej(pid(9), "vote", "undecided")], meta)
    write_state(run, "vote", {"generation": "votes-1"})  # the vote stage finished (select's upstream)
    return run


def outcome(run: RunLayout) -> dict[int, str]:
    distilled = read_manifest(run.manifest("distilled"), "distilled")
    rejects = read_manifest(run.rejects, "rejects")
    got = {int(p[:2]): "distilled" for p in distilled["pair_id"]}
    for r in rejects[rejects["stage"] == "select"].itertuples():
        assert int(r.item_id[:2]) not in got
        got[int(r.item_id[:2])] = r.reason
    return got


def test_cut_at_the_vote_threshold_is_exhaustive(tmp_path):
    run = build_run(tmp_path / "run")
    sel, votes = select_run(run, None, SelectConfig(min_ssim=0.3), num_shards=4)
    assert sel.threshold == T and votes.panel == PANEL
    assert outcome(run) == {1: "distilled", 3: "below_threshold", 4: "distilled", 5: "voted_out", 6: "distilled",
                            7: "judge_error", 8: "distilled", 10: "judge_error", 11: "distilled", 12: "no_reference"}
    assert exhaustiveness(run) == {"missing": [], "duplicated": [], "unknown": []}
    distilled = read_manifest(run.manifest("distilled"), "distilled").set_index("pair_id")
    assert (distilled.loc[pid(8), "n_yes"], distilled.loc[pid(8), "n_votes"]) == (2, 2)
    assert (distilled.loc[pid(6), "n_yes"], distilled.loc[pid(6), "n_votes"]) == (2, 3)
    assert distilled.loc[pid(4), "ref_id"] == "g1" and distilled.loc[pid(4), "source"] == "b"
    assert sel.counts["rejected_earlier"] == 3 and sel.counts["needs_skipped_judge"] == 0
    rejects = read_manifest(run.rejects, "rejects")
    detail = rejects.set_index("item_id").loc[pid(3)]
    assert detail["reason"] == "below_threshold" and "ssim 0.1000 < min_ssim 0.3" in detail["detail"]
    assert len(list(run.manifest("distilled").glob("part-*.parquet"))) == 4


def test_exhaustiveness_detects_lost_and_doubled_candidates(tmp_path):
    run = build_run(tmp_path / "run")
    select_run(run, None, SelectConfig(min_ssim=0.3), num_shards=2)
    write_shard(pd.DataFrame([{"item_id": pid(4), "stage": "embed", "reason": "bad_embedding", "detail": "x",
                               "source": None, "path": None}]), run.rejects, "part-embed-00000.parquet",
                get_schema("rejects"))
    (run.rejects / "part-select-00000.parquet").unlink()  # every pid here hashes to shard 0
    check = exhaustiveness(run)
    assert check["duplicated"] == [pid(4)]  # distilled and rejected at embed
    assert check["missing"] == [pid(i) for i in (3, 5, 7, 10, 12)]  # the deleted shard's rejects


def test_recut_reports_pairs_that_need_a_skipped_judge_and_is_idempotent(tmp_path):
    run = build_run(tmp_path / "run")
    sel, _ = select_run(run, 0.75, SelectConfig(), num_shards=3)
    got = outcome(run)
    assert got[4] == got[11] == "undecided" and sel.counts["needs_skipped_judge"] == 2
    assert got[6] == "voted_out" and got[8] == "distilled" and got[3] == "distilled"  # no min_ssim now
    rejects = read_manifest(run.rejects, "rejects").set_index("item_id")
    assert "vote.threshold: 0.75" in rejects.loc[pid(4), "detail"]
    assert exhaustiveness(run) == {"missing": [], "duplicated": [], "unknown": []}
    first = {p.name: p.read_bytes() for p in sorted(run.root.glob("manifests/*/part-*.parquet"))}
    select_run(run, 0.75, SelectConfig(), num_shards=3)
    assert {p.name: p.read_bytes() for p in sorted(run.root.glob("manifests/*/part-*.parquet"))} == first
    # back to the first cut with fewer shards: the old shards disappear, nothing doubles
    select_run(run, 0.5, SelectConfig(), num_shards=2)
    assert exhaustiveness(run) == {"missing": [], "duplicated": [], "unknown": []}
    assert outcome(run)[4] == "distilled"


def test_reports(tmp_path):
    run = build_run(tmp_path / "run")
    sel, votes = select_run(run, 0.75, SelectConfig(min_ssim=0.3), num_shards=2)
    out = write_select_reports(run, sel, votes, SelectConfig(min_ssim=0.3))
    for name in ("funnel.parquet", "funnel.md", "votes.md", "p_real.png", "retrieval_scores.png"):
        assert (run.reports / name).stat().st_size > 0, name
    tallies = out["tallies"].set_index("judge")
    assert tallies.loc["judge_a", "asked"] == 9 and tallies.loc["judge_a", "abstain_final"] == 1
    assert tallies.loc["judge_b", "abstain_retry"] == 1 and tallies.loc["judge_c", "asked"] == 3
    funnel = pd.read_parquet(run.reports / "funnel.parquet")
    assert set(funnel["stage"]) >= {"ingest", "retrieve", "vote", "select"}
    text = (run.reports / "votes.md").read_text()
    assert "2 pairs" in text and "vote.threshold: 0.75" in text


def test_judges_have_one_short_name_in_votes_reports_and_reject_details(tmp_path):
    """Issue 13: `votes.judge` is the name votes.md and reject details use; the model id has its own column;
    votes.md's agreement table has the same judges on its rows and its columns."""
    import re

    run = build_run(tmp_path / "run", models="/checkpoints/")  # local checkpoints: ids are folder paths
    sel, votes = select_run(run, T, SelectConfig(), num_shards=2)
    assert votes.panel == PANEL and votes.models == tuple("/checkpoints/" + j for j in PANEL)
    rows = read_manifest(run.manifest("votes"), "votes")
    assert len(rows[rows["judge"] == "judge_a"]) == 9
    assert (rows["judge_model"] == "/checkpoints/" + rows["judge"]).all()
    write_select_reports(run, sel, votes)
    rejects = read_manifest(run.rejects, "rejects").set_index("item_id")
    assert set(re.findall(r"(\S+): (?:yes|no|abstained)", rejects.loc[pid(10), "detail"])) == set(PANEL)
    text = (run.reports / "votes.md").read_text()
    table = text.split("## Agreement between judges")[1].split("Fleiss")[0]
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    first_column = [line.strip("|").split("|")[0].strip() for line in lines[1:]]
    assert header == ["judge", *PANEL] and first_column == list(PANEL)
    assert "/checkpoints/" not in text


def test_judge_labels_are_short_and_distinct():
    from tasks.vote.stage import judge_labels

    assert judge_labels(["/m/judge_a", "/m/judge_b", "/m/judge_c"]) == ("judge_a", "judge_b", "judge_c")
    assert judge_labels(["Qwen/Qwen2.5-VL-7B-Instruct", "OpenGVLab/InternVL3-8B"]) == ("Qwen2.5-VL-7B-Instruct", "InternVL3-8B")
    assert judge_labels(["/a/model", "/b/model", "x"]) == ("judge_a", "judge_b", "judge_c")  # folder names collide


def test_fleiss_kappa_known_values():
    import numpy as np

    assert fleiss_kappa(np.array([[YES, YES, YES], [NO, NO, NO]]))[1] == pytest.approx(1.0)
    # Every item split 2-1: observed agreement 1/3, chance 1/2 -> kappa -1/3
    assert fleiss_kappa(np.array([[YES, YES, NO], [NO, NO, YES]]))[1] == pytest.approx(-1 / 3)


JUDGES_BUILT = []


@JUDGES.register("never-build")
class NeverBuiltJudge(Judge):
    """A judge backend that records being constructed: select must never build one."""

    def __init__(self, ref, vote=None):
        JUDGES_BUILT.append(ref.name)
        raise AssertionError("select constructed a judge")

    def judge(self, pairs):
        raise AssertionError("select called a judge")


def test_select_command_recuts_without_any_model(tmp_path, prefect_harness, capsys):
    from flows.cli import main

    run = build_run(tmp_path / "run")
    config = tmp_path / "config.yaml"
    config.write_text("ingest: {num_shards: 2}\nselect: {min_ssim: 0.3}\nvote: {threshold: 0.5}\nmodels:\n  judges:\n"
                      + "".join(f"    - {{backend: never-build, name: {j}}}\n" for j in PANEL))
    assert main(["select", "--run", str(run.root), "--config", str(config), "--threshold", "0.75"]) == 0
    out = capsys.readouterr().out
    assert JUDGES_BUILT == []
    assert "2 pairs need a judge the cascade skipped" in out and "distilled:" in out
    assert outcome(run)[4] == "undecided" and outcome(run)[3] == "below_threshold"
    assert len(list(run.manifest("distilled").glob("part-*.parquet"))) == 2
    assert main(["select", "--run", str(run.root), "--threshold", "1.5"]) == 2
    assert main(["select", "--run", str(tmp_path / "nothing")]) == 2


def test_select_flow_skips_an_unchanged_cut_and_redoes_a_changed_one(tmp_path, prefect_harness):
    from flows.stage import run_stage_flow
    from tasks.config import RunConfig

    def select_flow(threshold):
        return run_stage_flow("select", str(run.root), RunConfig(ingest={"num_shards": 2}), threshold=threshold)

    counts = ("distilled", "voted_out", "undecided", "needs_skipped_judge", "threshold")
    run = build_run(tmp_path / "run")
    first = select_flow(0.5)
    assert first["redone"] == 2
    stamp = {p: p.stat().st_mtime_ns for p in run.manifest("distilled").glob("*.parquet")}
    again = select_flow(0.5)
    assert again["redone"] == 0 and {k: again[k] for k in counts} == {k: first[k] for k in counts}
    assert {p: p.stat().st_mtime_ns for p in run.manifest("distilled").glob("*.parquet")} == stamp
    changed = select_flow(0.75)  # new arguments
    assert changed["redone"] == 2 and changed["needs_skipped_judge"] == 2 and "threshold 0.5 -> 0.75" in changed["why"]
    (run.reports / "p_real.png").unlink()
    assert select_flow(0.75)["needs_skipped_judge"] == 2
    assert (run.reports / "p_real.png").is_file()  # a lost report is rebuilt
    assert select_flow(0.75)["redone"] == 0
    # new inputs: a redone vote stage (a new generation) makes the cut stale
    stamp = {p: p.stat().st_mtime_ns for p in run.manifest("distilled").glob("*.parquet")}
    write_state(run, "vote", {"generation": "votes-2"})
    redo = select_flow(0.75)
    assert redo["redone"] == 2 and "vote was redone" in redo["why"]
    assert {p: p.stat().st_mtime_ns for p in run.manifest("distilled").glob("*.parquet")} != stamp


def test_nothing_left_to_vote_on(tmp_path):
    """Every candidate rejected before voting and no votes shard at all: an empty cut, still exhaustive."""
    run = build_run(tmp_path / "run")
    import shutil

    shutil.rmtree(run.manifest("votes"))
    for path in run.rejects.glob("part-vote-*"):
        path.unlink()
    write_shard(pd.DataFrame([{"item_id": pid(i), "stage": "retrieve", "reason": "no_reference", "detail": "x",
                               "source": None, "path": None} for i in range(1, 13) if i != 2]),
                run.rejects, "part-retrieve-00001.parquet", get_schema("rejects"))
    write_shard(pd.DataFrame(columns=get_schema("retrieval").columns), run.manifest("retrieval"), "part-00000.parquet",
                get_schema("retrieval"))
    sel, votes = select_run(run, 0.5, SelectConfig(), num_shards=2)
    assert len(sel.distilled) == 0 and len(sel.rejects) == 0 and votes.panel == ()
    assert exhaustiveness(run) == {"missing": [], "duplicated": [], "unknown": []}
    with pytest.raises(ValueError, match="give a threshold"):
        select_run(run, None, SelectConfig(), num_shards=2)
