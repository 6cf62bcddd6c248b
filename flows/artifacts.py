"""Prefect artifacts with stable keys per run, so a run can be inspected in the UI."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from data_manifests import RunLayout
from tasks.funnel import format_table, funnel_table


def artifact_key(run: RunLayout, kind: str) -> str:
    """Keys allow lowercase letters, digits and dashes only."""
    slug = re.sub(r"[^a-z0-9]+", "-", run.root.name.lower()).strip("-") or "run"
    return f"{slug}-{kind}"


def _cell(value):
    """JSON-safe table cells: lists shown as text, numpy scalars as Python numbers, NaN as empty."""
    if isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
        return ", ".join(map(str, items[:5])) + (f" (+{len(items) - 5})" if len(items) > 5 else "")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def publish_table(run: RunLayout, kind: str, frame: pd.DataFrame, description: str) -> None:
    records = [{k: _cell(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]
    create_table_artifact(key=artifact_key(run, kind), table=records, description=description)


def publish_funnel(run: RunLayout) -> pd.DataFrame:
    frame = funnel_table(run)
    publish_table(run, "funnel", frame, f"Funnel per source and stage for run `{run.root}`")
    create_markdown_artifact(
        key=artifact_key(run, "funnel-md"),
        markdown=f"# Funnel\n\nRun folder: `{run.root}`\n\n{format_table(frame)}\n",
        description="Funnel as markdown",
    )
    return frame


def publish_manifest_link(run: RunLayout, stage: str) -> None:
    create_link_artifact(
        key=artifact_key(run, f"{stage}-manifest"),
        link=run.manifest(stage).as_uri(),
        link_text=f"{stage} manifest folder",
        description=f"Parquet manifest folder of stage `{stage}` (read with pandas.read_parquet(dir))",
    )


def publish_preview(run: RunLayout, stage: str, frame: pd.DataFrame, rows: int = 20) -> None:
    publish_table(run, f"{stage}-preview", frame.head(rows), f"First {rows} rows of `{run.manifest(stage)}`")


def publish_stage(run: RunLayout, stage: str, report: dict) -> None:
    """The artifacts of a stage that did work: its manifest, the funnel, and its own tables."""
    from tasks.pipeline import spec

    output = spec(stage).output
    publish_manifest_link(run, output)
    publish_table(run, f"{stage}-report", pd.DataFrame([{k: _cell(v) for k, v in report.items()}]),
                  f"What the {stage} stage skipped, redid and why")
    extra = _EXTRA.get(stage)
    if extra is not None:
        extra(run, output)
    publish_funnel(run)


def _preview(run: RunLayout, output: str) -> None:
    from data_manifests import read_manifest

    publish_preview(run, output, read_manifest(run.manifest(output), output).head(20))


def _votes(run: RunLayout, output: str) -> None:
    from tasks.select.stage import load_votes
    from tasks.stage import read_state
    from tasks.select.reports import vote_summary

    votes = load_votes(run)
    threshold = votes.thresholds[0] if len(votes.thresholds) == 1 else 0.5
    tallies, agreement, (n_full, kappa) = vote_summary(votes, threshold)
    cascade = (read_state(run, "vote") or {}).get("payload", {}).get("config", {}).get("vote.cascade")
    publish_table(run, "vote-tallies", tallies, f"Votes per judge at threshold {threshold:g} (cascade {cascade})")
    publish_table(run, "vote-agreement", agreement,
                  f"Pairwise agreement between judges; Fleiss' kappa over {n_full} fully voted pairs: "
                  f"{'n/a' if kappa is None else f'{kappa:.3f}'}")


def _select(run: RunLayout, output: str) -> None:
    from tasks.select.stage import REPORTS

    _preview(run, output)
    for name in REPORTS:
        path = run.reports / name
        if path.is_file():
            create_link_artifact(key=artifact_key(run, "report-" + name.replace(".", "-").replace("_", "-")),
                                 link=path.as_uri(), link_text=name, description=f"select report `{name}`")


_EXTRA = {"ingest": _preview, "retrieve": _preview, "vote": _votes, "select": _select}
