"""Vote stage flow: the judge panel scores every retrieved pair, shard by shard, through the answer cache."""
from __future__ import annotations

import uuid

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from data_manifests import RunLayout
from tasks.config import IngestConfig, ModelRef, VoteConfig
from tasks.judge_cache import JudgeCache
from tasks.judges import JudgeUnavailable, make_judge
from tasks.judges.prompt import PROMPT_VERSION
from tasks.loaded_models import cached_model
from tasks.selection import load_votes
from tasks.vote_reports import vote_summary
from tasks.voting import (
    STAGE, CallStats, VoteMeta, invalidate_stale, log_calls, panel_ids, read_calls, shard_current, vote_items,
    vote_shard, write_votes,
)

from .artifacts import publish_funnel, publish_manifest_link, publish_table
from .shards import run_stage_shards


def load_judges(judges: list[ModelRef], cfg: VoteConfig) -> list:
    """The panel, loaded once per process, each checked: an unreachable server fails here, naming it."""
    loaded = []
    for i, ref in enumerate(judges, 1):
        judge = cached_model("judge", ref, cfg, make_judge)
        try:
            judge.check()
        except JudgeUnavailable as exc:
            raise JudgeUnavailable(f"vote: judge {i} of {len(judges)} ({judge.model_id}): {exc}") from None
        loaded.append(judge)
    return loaded


@task(name="vote-shard", cache_policy=NO_CACHE)
def vote_shard_task(run: str, shard: int, items, judges: list[ModelRef], cfg: VoteConfig, session: str):
    layout = RunLayout.at(run)
    panel = [cached_model("judge", ref, cfg, make_judge) for ref in judges]
    stats = CallStats()
    with JudgeCache(layout) as cache:
        rows, rejects = vote_shard(items, panel, cfg, cache, stats)
    meta = VoteMeta(tuple(j.model_id for j in panel), cfg.threshold, cfg.cascade, PROMPT_VERSION)
    kept = write_votes(layout, shard, rows, rejects, meta)
    log_calls(layout, session, shard, stats)
    return kept, len(rejects)


@flow(name="vote", log_prints=True)
def vote_flow(run: str, judges: list[ModelRef], vote: VoteConfig | None = None,
              ingest: IngestConfig | None = None) -> dict:
    """Ask the judge panel about every retrieved pair (cascade, cache, resumable shard by shard)."""
    cfg, ingest = vote or VoteConfig(), ingest or IngestConfig()
    layout = RunLayout.at(run)
    wanted = VoteMeta(panel_ids(judges), cfg.threshold, cfg.cascade, PROMPT_VERSION)
    items = vote_items(layout)
    if not all(shard_current(layout, i, wanted) for i in range(ingest.num_shards)):
        for judge in load_judges(judges, cfg):  # fail fast, before anything is touched
            if judge.model_id not in wanted.panel:
                raise RuntimeError(f"judge {judge.model_id!r} does not report the id its config implies")
    stale = invalidate_stale(layout, ingest.num_shards, wanted)
    if stale:
        print(f"vote: {len(stale)} shard(s) were voted with another threshold, panel or prompt, or hold pairs "
              f"to retry; redoing them (cached answers are reused)")
    session = uuid.uuid4().hex
    totals = run_stage_shards(
        layout, STAGE, "votes", items, "pair_id", ingest.num_shards, vote_shard_task,
        lambda i, shard_items: dict(run=str(layout.root), shard=i, items=shard_items, judges=judges, cfg=cfg,
                                    session=session),
    )
    calls = read_calls(layout, session)
    totals["model_calls"] = int(calls["called"].sum()) if len(calls) else 0
    totals["cache_hits"] = int(calls["cached"].sum()) if len(calls) else 0
    totals["questions_per_pair"] = round(calls["needed"].sum() / len(items), 3) if len(calls) and len(items) else 0.0
    votes = load_votes(layout)
    tallies, agreement, (n_full, kappa) = vote_summary(votes, cfg.threshold)
    publish_table(layout, "vote-tallies", tallies,
                  f"Votes per judge at threshold {cfg.threshold:g} (cascade {'on' if cfg.cascade else 'off'})")
    publish_table(layout, "vote-agreement", agreement,
                  f"Pairwise agreement between judges; Fleiss' kappa over {n_full} fully voted pairs: "
                  f"{'n/a' if kappa is None else f'{kappa:.3f}'}")
    publish_manifest_link(layout, "votes")
    publish_funnel(layout)
    print(f"vote: {totals}")
    return totals
