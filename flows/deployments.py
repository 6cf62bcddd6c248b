"""Deployment entry points for the stage flows: a run folder and a config path start any of them.

The stage flows (`flows/caption.py`, ...) take validated config sections (pydantic models), which is
right for the parent flow and for tests but makes a poor form in the UI. Each wrapper here loads the
run config (every section validated, relative paths resolved, as `distill` does) and calls its stage
flow as a sub-flow with the config's task runner, so a stage started from a deployment does exactly
what the same stage does inside `distill`. `distill`, `train` and `evaluate` already take paths and are
deployed directly (see prefect.yaml).
"""
from __future__ import annotations

from prefect import flow

from data_manifests import RunLayout

from .config import load_run_config
from .distill import run_stage
from .runners import make_task_runner


def _stage(name: str, run: str, config: str, **extra) -> dict:
    cfg = load_run_config(config)
    return run_stage(name, cfg, str(RunLayout.at(run).create().root), make_task_runner(cfg.task_runner), **extra)


@flow(name="ingest-stage", log_prints=True)
def ingest_stage(run: str, config: str) -> dict:
    """Ingest the config's `sources:` and `gallery:` into a run folder.

    Args:
        run: the run folder (created if missing).
        config: a run config YAML (configs/paper.yaml, configs/demo.yaml, ...).
    """
    return _stage("ingest", run, config)


@flow(name="caption-stage", log_prints=True)
def caption_stage(run: str, config: str) -> dict:
    """Caption the gallery and candidate images of a run with the config's `models.captioner`.

    Args:
        run: the run folder (ingested).
        config: a run config YAML.
    """
    return _stage("caption", run, config)


@flow(name="embed-stage", log_prints=True)
def embed_stage(run: str, config: str) -> dict:
    """Embed the captions and images of a run with `models.embedder`; build the gallery indexes.

    Args:
        run: the run folder (captioned).
        config: a run config YAML.
    """
    return _stage("embed", run, config)


@flow(name="retrieve-stage", log_prints=True)
def retrieve_stage(run: str, config: str) -> dict:
    """Find every candidate's real-rain reference (semantic, visual, SSIM) with the config's `retrieval:`.

    Args:
        run: the run folder (embedded and indexed).
        config: a run config YAML.
    """
    return _stage("retrieve", run, config)


@flow(name="vote-stage", log_prints=True)
def vote_stage(run: str, config: str) -> dict:
    """Ask the config's three `models.judges` about every retrieved pair (cached, resumable).

    Args:
        run: the run folder (retrieved).
        config: a run config YAML.
    """
    return _stage("vote", run, config)


@flow(name="select-stage", log_prints=True)
def select_stage(run: str, config: str, threshold: float | None = None) -> dict:
    """Cut a voted run into the distilled manifest and rejects (no model is called).

    Args:
        run: the run folder (voted).
        config: a run config YAML (its `vote.threshold` and `select:` thresholds).
        threshold: p_real threshold overriding `vote.threshold` for this cut.
    """
    return _stage("select", run, config, threshold=threshold)
