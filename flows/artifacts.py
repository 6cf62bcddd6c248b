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
