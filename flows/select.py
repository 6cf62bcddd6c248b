"""Select stage flow: the cut. Reads manifests only; no model is loaded or called."""
from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_link_artifact

from data_manifests import RunLayout
from tasks.config import IngestConfig, SelectConfig, VoteConfig
from tasks.selection import OUTPUT, cut_signature, exhaustiveness, previous_cut, record_cut, resolve_shards, select_run
from tasks.vote_reports import write_select_reports

from .artifacts import artifact_key, publish_funnel, publish_manifest_link, publish_preview, publish_table


@flow(name="select", log_prints=True)
def select_flow(run: str, vote: VoteConfig | None = None, select: SelectConfig | None = None,
                threshold: float | None = None, ingest: IngestConfig | None = None) -> dict:
    """Cut the run at `threshold` (else `vote.threshold`, else the vote stage's own) into
    `distilled` + `select` rejects, and write the funnel and vote reports."""
    layout = RunLayout.at(run)
    cfg = select or SelectConfig()
    if threshold is None and vote is not None:
        threshold = vote.threshold
    num_shards = resolve_shards(layout, ingest.num_shards if ingest else None)
    signature = cut_signature(layout, threshold, cfg, num_shards)
    counts = previous_cut(layout, signature)
    if counts is not None:  # same inputs, same arguments: the cut on disk is this cut
        print(f"select: up to date (threshold {counts['threshold']:g}, {counts['distilled']} distilled)")
        publish_funnel(layout)
        return counts
    sel, votes = select_run(layout, threshold, cfg, num_shards)
    check = exhaustiveness(layout)
    counts = dict(sel.counts, threshold=sel.threshold, missing=len(check["missing"]),
                  duplicated=len(check["duplicated"]))
    sel.counts.update(counts)
    reports = write_select_reports(layout, sel, votes, cfg)
    publish_funnel(layout)
    publish_preview(layout, OUTPUT, sel.distilled)
    publish_manifest_link(layout, OUTPUT)
    publish_table(layout, "vote-tallies", reports["tallies"], f"Votes per judge at the cut's threshold {sel.threshold:g}")
    publish_table(layout, "vote-agreement", reports["agreement"], "Pairwise agreement between judges")
    for path in reports["files"]:
        create_link_artifact(key=artifact_key(layout, "report-" + path.name.replace(".", "-").replace("_", "-")),
                             link=path.as_uri(), link_text=path.name, description=f"select report `{path.name}`")
    if check["missing"] or check["duplicated"] or check["unknown"]:
        # an earlier stage dropped or double-rejected candidates: say so loudly, the cut itself is written
        print(f"select: WARNING exhaustiveness broken: {len(check['missing'])} candidates in no manifest, "
              f"{len(check['duplicated'])} in more than one (e.g. {(check['missing'] + check['duplicated'])[:3]})")
    if sel.counts.get("needs_skipped_judge"):
        print(f"select: {sel.counts['needs_skipped_judge']} pairs need a judge the cascade skipped at the vote "
              f"stage's threshold {list(votes.thresholds)}: rerun the vote stage with vote.threshold: "
              f"{sel.threshold:g} (cached answers are reused)")
    record_cut(layout, signature, num_shards, counts, [p.name for p in reports["files"]])
    print(f"select: {counts}")
    return counts
