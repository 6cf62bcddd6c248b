"""The run report (`flows.report`, `unirain report RUN`) and the pure pieces the UI artifacts share
(`flows.gallery`): a real distillation with the tiny offline models, run stage by stage without
Prefect, then the HTML file opened in headless Chromium with every image loaded."""
from __future__ import annotations

import json
import re

import pytest
import yaml

from data_manifests import RunError, RunLayout, read_manifest


@pytest.fixture(scope="module")
def distilled_run(tmp_path_factory, tiny_models):
    from tasks.config import load_run_config
    from tasks.offline.synth import synthesize_gallery, synthesize_paired
    from tasks.pipeline import STAGE_ORDER
    from tasks.stage import make_stage, prepare_run, run_stage

    root = tmp_path_factory.mktemp("report")
    synthesize_paired(root / "paired", per_type=2, seed=5, size=(96, 96))
    synthesize_gallery(root / "gallery", n=6, seed=6, size=(96, 96))
    cfg = yaml.safe_load(tiny_models.config_path.read_text())
    cfg.update(sources=[f"unirain={root / 'paired'}"], gallery=[str(root / "gallery")])
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    config = load_run_config(root / "config.yaml")
    layout, shards = prepare_run(root / "run", config)
    for name in STAGE_ORDER:
        run_stage(make_stage(name, config, shards), layout)
    return layout


def test_rejects_summary_counts_every_reject_once(distilled_run):
    from flows.gallery import read_rejects, rejects_summary

    rejects = read_rejects(distilled_run)
    counts, sample = rejects_summary(distilled_run, per_reason=1)
    assert int(counts["total"].sum()) == len(rejects) > 0
    for _, row in counts.iterrows():
        for reason in counts.columns.drop(["stage", "total"]):
            n = ((rejects["stage"] == row["stage"]) & (rejects["reason"] == reason)).sum()
            assert row[reason] == n
    assert len(sample) == len(rejects.groupby(["stage", "reason"])) and sample["detail"].notna().all()


def test_decision_gallery_shows_each_pair_with_its_reference_scores_and_every_judge(distilled_run):
    from flows.gallery import decision_gallery
    from tasks.select.stage import load_votes

    decisions = decision_gallery(distilled_run, per_outcome=3)
    distilled = set(read_manifest(distilled_run.manifest("distilled"), "distilled")["pair_id"])
    retrieval = read_manifest(distilled_run.manifest("retrieval"), "retrieval").set_index("pair_id")
    kept = [d for d in decisions if d.outcome == "distilled"]
    assert len(kept) == min(3, len(distilled)) and {d.pair_id for d in kept} <= distilled
    assert all(d.pair_id not in distilled for d in decisions if d.outcome != "distilled")
    panel = load_votes(distilled_run).panel
    votes = read_manifest(distilled_run.manifest("votes"), "votes")
    for d in decisions:
        assert d.ref_id == retrieval.at[d.pair_id, "ref_id"]
        assert d.scores["ssim"] == pytest.approx(float(retrieval.at[d.pair_id, "ssim"]))
        # every judge of the panel, once, even one the cascade did not ask
        assert len(d.votes) == len(panel) and len({j for j, _, _ in d.votes}) == len(panel)
        mine = votes[votes["pair_id"] == d.pair_id]
        assert sum(w != "not asked" for _, w, _ in d.votes) == len(mine)
        assert sorted(p for _, _, p in d.votes if p is not None) == pytest.approx(sorted(mine["p_real"].dropna()))
        assert d.candidate and d.reference and d.candidate != d.reference


def test_artifact_keys_of_two_runs_with_the_same_folder_name_differ(tmp_path):
    from flows.artifacts import artifact_key

    a, b = RunLayout.at(tmp_path / "a" / "run").create(2), RunLayout.at(tmp_path / "b" / "run").create(2)
    ka, kb = artifact_key(a, "funnel"), artifact_key(b, "funnel")
    assert ka != kb and ka.startswith("run-") and ka.endswith("-funnel") and re.fullmatch(r"[a-z0-9-]+", ka)
    assert artifact_key(RunLayout.at(a.root), "funnel") == ka  # stable: read back from run.json
    # a run made before run ids existed gets one the next time a stage opens it
    info = json.loads(a.marker.read_text())
    del info["run_id"]
    a.marker.write_text(json.dumps(info))
    assert a.run_id is None and RunLayout.at(a.root).create().run_id


def test_report_is_one_self_contained_file_whose_images_all_load(distilled_run, tmp_path):
    from flows.gallery import decision_gallery
    from flows.report import write_report

    from .browser import all_loaded, body_text, browser, images, wait_for

    # an evaluation report as `unirain evaluate` writes it: markdown naming its grid by a relative path
    from matplotlib.figure import Figure

    grid = distilled_run.reports / "evaluation_grids" / "test" / "day_drop.png"
    grid.parent.mkdir(parents=True)
    fig = Figure(figsize=(3, 1))
    fig.savefig(grid)
    (distilled_run.reports / "evaluation.md").write_text(
        "# Evaluation\n\n| test set | PSNR | input | gain |\n|---|---|---|---|\n| test | 25.00 | 24.00 | +1.00 |\n\n"
        "![test / day_drop](evaluation_grids/test/day_drop.png)\n")

    path = write_report(distilled_run.root)
    assert path == distilled_run.reports / "report.html"
    moved = write_report(distilled_run.root, tmp_path / "elsewhere" / "r.html")  # --out: still self-contained
    text = moved.read_text()
    assert "file://" not in text and not re.search(r"""(src|href)=['"](?!data:)""", text)  # nothing to fetch
    charts = ["p_real.png", "retrieval_scores.png"]
    expected = len(charts) + 1 + 2 * len(decision_gallery(distilled_run))  # + the evaluation grid
    with browser() as b:
        b.get(moved.as_uri())
        imgs = wait_for(b, lambda b: (lambda i: i if all_loaded(i, expected) else None)(images(b)), timeout=30) or images(b)
        page = body_text(b)
    assert all_loaded(imgs, expected) and len(imgs) == expected, imgs
    assert all(src.startswith("data:image/") for src, _, _ in imgs)
    for heading in ("Funnel", "Rejects", "Decision gallery", "Judges and their agreement", "Training and evaluation",
                    "Charts"):
        assert heading in page
    assert "Fleiss' kappa" in page and "+1.00" in page and "distilled" in page  # votes.md, evaluation, gallery


def test_report_of_a_folder_that_is_not_a_run_is_refused(tmp_path):
    from flows.report import write_report

    with pytest.raises(RunError, match="not a UniRain run folder"):
        write_report(tmp_path)
    assert not (tmp_path / "reports").exists()
