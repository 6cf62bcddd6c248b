"""The distillation parent flow: every stage of `tasks.pipeline.STAGE_ORDER` up to `until`.

Each stage is the generic `stage` sub-flow (`flows/stage.py`): it skips shards whose fingerprint
matches, redoes the others, and a redone stage makes every later one stale. Rerunning the same
command after a crash (or `prefect flow-run retry`) finishes the run without redoing work.
The flow's result is persisted as JSON (never a pickle) so `run_deployment(...)` can read it.
"""
from __future__ import annotations

import time

from prefect import flow

from data_manifests import RunError
from tasks.config import load_run_config
from tasks.funnel import format_table, funnel_table
from tasks.pipeline import stages_until
from tasks.stage import is_current, make_stage, prepare_run, read_state, run_stage

from .runners import make_task_runner
from .ui import run_name, with_routed_logs
from .stage import StageName, stage_flow


@flow(name="distill", flow_run_name=run_name("distill"), log_prints=True, persist_result=True,
      result_serializer="json")
@with_routed_logs
def distill_flow(run: str, config: str, until: StageName = "select") -> dict:
    """Distil a run: every stage up to `until`, resuming finished shards.

    Args:
        run: the run folder (created if missing). A relative path is read from the flow run's working folder
            (the repository for `make serve` deployments, the current folder for the CLI): absolute paths are
            safest.
        config: a run config YAML (configs/demo.yaml, configs/paper.yaml, ...; its `sources:` and `gallery:`
            are ingested), a path read like `run`; paths inside the config are read from the config's own
            folder.
        until: the last stage to run.
    """
    cfg = load_run_config(config)
    layout, _ = prepare_run(run, cfg, str(config))
    ingest_here = bool(cfg.sources or cfg.gallery)
    if not ingest_here and not read_state(layout, "ingest"):
        raise RunError(f"{config} lists no sources and {layout.root} has not been ingested: add `sources:` and "
                       "`gallery:` to the config or run `unirain ingest` first")
    runner = make_task_runner(cfg.task_runner)
    results: dict = {}
    for name in stages_until(until):
        if name == "ingest" and not ingest_here:
            continue  # the run's own manifests (from `unirain ingest`) are used
        started = time.monotonic()
        stage = make_stage(name, cfg, layout.num_shards)
        if is_current(stage, layout):  # a finished stage: checked here, no sub-flow (~1 s of Prefect each)
            report = run_stage(stage, layout)
            report.seconds = time.monotonic() - started  # the whole check, is_current included
            print(report.line())
            results[name] = {**report.to_dict(), "line": report.line()}
            continue
        results[name] = stage_flow.with_options(task_runner=runner)(stage=name, run=str(layout.root), config=cfg)
    print(f"distill: run {layout.root} (through {until})\n" + format_table(funnel_table(layout)))
    return results
