"""The distillation parent flow: ingest -> caption -> embed/index -> retrieve -> vote -> select.

Each stage is a sub-flow that skips finished shards, so rerunning the same command after a crash
(or `prefect flow-run retry`) finishes the run without redoing work.
"""
from __future__ import annotations

import time
from typing import Literal

from prefect import flow

from data_manifests import RunLayout, count_rows
from tasks.config import RunConfig
from tasks.funnel import format_table, funnel_table

from .caption import caption_flow
from .config import load_run_config
from .embed import embed_flow
from .ingest import ingest_flow
from .retrieve import retrieve_flow
from .runners import make_task_runner
from .select import select_flow
from .vote import vote_flow

STAGES = ("ingest", "caption", "embed", "retrieve", "vote", "select")
Stage = Literal["ingest", "caption", "embed", "retrieve", "vote", "select"]


@flow(name="distill", log_prints=True, persist_result=True)
def distill_flow(run: str, config: str, until: Stage = "select") -> dict:
    """Distil a run: every stage up to `until`, resuming finished shards.

    Args:
        run: the run folder (created if missing).
        config: a run config YAML (configs/paper.yaml, configs/demo.yaml, ...).
        until: the last stage to run.
    """
    cfg = load_run_config(config)
    layout = RunLayout.at(run).create()
    runner = make_task_runner(cfg.task_runner)
    if not (cfg.sources or cfg.gallery) and count_rows(layout.manifest("candidates"), "candidates") == 0:
        raise ValueError(f"{config} lists no sources and {layout.root} has no candidates manifest: "
                         "add `sources:` and `gallery:` to the config or run `unirain ingest` first")
    results: dict = {"seconds": {}}
    for name in STAGES[: STAGES.index(until) + 1]:
        if name == "ingest" and not (cfg.sources or cfg.gallery):
            continue  # the run's existing manifests are used
        started = time.monotonic()
        results[name] = run_stage(name, cfg, str(layout.root), runner)
        results["seconds"][name] = round(time.monotonic() - started, 1)
    print(f"distill: run {layout.root} (through {until})\n" + format_table(funnel_table(layout)))
    return results


def run_stage(name: str, cfg: RunConfig, run_dir: str, runner, **extra) -> dict:
    """One stage of a run with the config's settings, as a sub-flow on the config's task runner.
    The parent flow and the stage deployments (`flows/deployments.py`) both start stages here."""
    m, on_runner = cfg.models, (lambda f: f.with_options(task_runner=runner))
    calls = {
        "ingest": lambda: on_runner(ingest_flow)(run=run_dir, sources=cfg.sources, gallery=cfg.gallery,
                                                 ingest=cfg.ingest),
        "caption": lambda: on_runner(caption_flow)(run=run_dir, model=_required(m.captioner, "models.captioner"),
                                                   caption=cfg.caption, ingest=cfg.ingest),
        "embed": lambda: on_runner(embed_flow)(run=run_dir, model=_required(m.embedder, "models.embedder"),
                                               embed=cfg.embed, index=cfg.index, ingest=cfg.ingest),
        "retrieve": lambda: on_runner(retrieve_flow)(run=run_dir, retrieval=cfg.retrieval, ingest=cfg.ingest),
        "vote": lambda: on_runner(vote_flow)(run=run_dir, judges=_judges(m.judges), vote=cfg.vote, ingest=cfg.ingest),
        "select": lambda: select_flow(run=run_dir, vote=cfg.vote, select=cfg.select, ingest=cfg.ingest, **extra),
    }
    return calls[name]()


def _required(ref, key: str):
    if ref is None:
        raise ValueError(f"{key}: not set in the config")
    return ref


def _judges(judges: list):
    if len(judges) != 3:
        raise ValueError(f"models.judges: majority voting needs exactly three judges, the config has {len(judges)}")
    return judges
