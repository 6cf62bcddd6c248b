"""One generic Prefect flow and task for every stage: the logic is `tasks.stage.run_stage`.

`stage_flow(stage, run, config)` is a stage's sub-flow inside `distill` and the entry point of
every stage deployment (`prefect.yaml` gives it the stage name as a parameter). Shards run as
`shard` tasks on the flow's task runner (threads, or Dask by config). Nothing is pickled to disk:
tasks keep no results (resume is the runner's fingerprints, not Prefect's result cache).
"""
from __future__ import annotations

from typing import Any, Literal

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from tasks.config import RunConfig, load_run_config
from tasks.pipeline import STAGE_ORDER
from tasks.stage import make_stage, prepare_run, run_stage

from .artifacts import publish_stage
from .runners import make_task_runner
from .ui import run_name, with_routed_logs

StageName = Literal[STAGE_ORDER]  # type: ignore[valid-type]


@task(name="shard", cache_policy=NO_CACHE, persist_result=False)
def call(fn, kwargs: dict[str, Any]):
    """One unit of a stage's work (a shard, or an ingest chunk), run where the task runner puts it."""
    return fn(**kwargs)


def prefect_submit(stage: str):
    def submit(fn, **kwargs):
        label = f"{stage}-shard-{kwargs['shard']}" if "shard" in kwargs else f"{stage}-{fn.__name__}"
        return call.with_options(task_run_name=label).submit(fn, kwargs)

    return submit


def resolve_config(config: str | RunConfig) -> tuple[RunConfig, str]:
    if isinstance(config, RunConfig):
        return config, "the config"
    return load_run_config(config), str(config)


@flow(name="stage", flow_run_name=run_name("{stage}"), log_prints=True, persist_result=False)
@with_routed_logs
def stage_flow(stage: StageName, run: str, config: str | RunConfig, threshold: float | None = None) -> dict:
    """Run one stage of a run folder: skip finished shards, redo stale or damaged ones.

    Args:
        stage: ingest, caption, embed, retrieve, vote or select.
        run: the run folder (created by ingest when missing). A relative path is read from the flow run's
            working folder (the repository for `make serve` deployments, the current folder for the CLI):
            absolute paths are safest.
        config: a run config YAML (configs/demo.yaml, configs/paper.yaml, ...), a path read like `run`; paths
            inside the config are read from the config's own folder.
        threshold: select only: the p_real threshold of this cut (default: vote.threshold).
    """
    cfg, origin = resolve_config(config)
    layout, num_shards = prepare_run(run, cfg, origin)
    extra = {"threshold": threshold} if stage == "select" else {}
    stage_obj = make_stage(stage, cfg, num_shards, **extra)
    report = run_stage(stage_obj, layout, prefect_submit(stage), on_progress=_progress(layout, stage))
    print(report.line())
    out = {**report.to_dict(), "line": report.line()}
    if report.redone:
        publish_stage(layout, stage, out)
    return out


def _progress(layout, stage: str):
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    state: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if "id" not in state:
            state["id"] = create_progress_artifact(progress=0.0, description=f"{stage}: shards of {layout.root.name}")
        update_progress_artifact(state["id"], progress=100.0 * done / max(total, 1))

    return update


def run_stage_flow(stage: str, run: str, cfg: RunConfig, **extra) -> dict:
    """`stage_flow` on the config's task runner (the CLI and tests start stages here)."""
    return stage_flow.with_options(task_runner=make_task_runner(cfg.task_runner))(
        stage=stage, run=str(run), config=cfg, **extra)
