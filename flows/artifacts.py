"""Prefect artifacts with stable keys per run, so a run can be judged in the UI alone.

A browser showing the UI refuses `file://` links, so nothing here links to a file: charts and
thumbnails travel inside markdown artifacts as `data:` URIs, and manifest folders are named as text
with the line that reads them. Keys are `<folder name>-<run id>-<kind>`: the folder name for
reading, the first 8 hex digits of the run id in `run.json` so two runs named `run` in different
folders keep their own artifacts.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from data_manifests import RunError, RunLayout
from tasks.funnel import format_table, funnel_table

from .gallery import decision_gallery, gallery_markdown, image_uri, rejects_summary


def artifact_key(run: RunLayout, kind: str) -> str:
    """Keys allow lowercase letters, digits and dashes only."""
    slug = re.sub(r"[^a-z0-9]+", "-", run.root.name.lower()).strip("-") or "run"
    try:
        run_id = run.run_id
    except RunError:
        run_id = None
    kind = re.sub(r"[^a-z0-9-]+", "-", kind.lower())  # stage names like `leak_check`
    return f"{slug}-{run_id[:8]}-{kind}" if run_id else f"{slug}-{kind}"


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


def md_table(frame: pd.DataFrame) -> str:
    """A markdown table whose cells cannot break it (pipes escaped, newlines folded)."""
    if frame.empty:
        return "(none)"
    cell = lambda v: "" if v is None or (isinstance(v, float) and v != v) else str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


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


def publish_manifest(run: RunLayout, stage: str) -> None:
    """Where a manifest is and how to read it, as text (a browser cannot follow a file:// link)."""
    folder = run.manifest(stage)
    create_markdown_artifact(
        key=artifact_key(run, f"{stage}-manifest"),
        markdown=(f"# `{stage}` manifest\n\nFolder (Parquet shards, on the machine that ran the flow):\n\n"
                  f"`{folder}`\n\nRead it with `pandas.read_parquet(\"{folder}\")` or DuckDB "
                  f"`select * from read_parquet('{folder}/*.parquet')`; the funnel: `unirain inspect {run.root}`; "
                  f"everything in one page: `unirain report {run.root}`.\n"),
        description=f"Where the `{stage}` manifest is and how to read it",
    )


def publish_preview(run: RunLayout, stage: str, frame: pd.DataFrame, rows: int = 20) -> None:
    publish_table(run, f"{stage}-preview", frame.head(rows), f"First {rows} rows of `{run.manifest(stage)}`")


def charts_markdown(title: str, paths: list[Path], note: str = "") -> str:
    """Markdown with each chart inline (a `data:` URI the UI renders); unreadable files are named."""
    parts = [f"# {title}", ""] + ([note, ""] if note else [])
    for path in paths:
        try:
            parts += [f"**{path.name}**", "", f"![{path.stem}]({image_uri(path)})", ""]
        except (OSError, ValueError) as exc:
            parts += [f"**{path.name}**: unreadable ({exc})", ""]
    return "\n".join(parts)


def publish_charts(run: RunLayout, kind: str, title: str, paths: list[Path], note: str = "") -> None:
    paths = [p for p in paths if p.is_file()]
    if paths:
        create_markdown_artifact(key=artifact_key(run, kind), markdown=charts_markdown(title, paths, note),
                                 description=f"{title}: " + ", ".join(p.name for p in paths))


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def rejects_list(sample: pd.DataFrame) -> str:
    """One bullet per reject (a list wraps long details; the UI's tables do not)."""
    def line(r) -> str:
        where = f" ({r.source}: `{r.path}`)" if isinstance(r.path, str) and r.path else ""
        return f"- **{r.stage} / {r.reason}** `{r.item_id}`{where}: {r.detail}"

    return "\n".join(line(r) for r in sample.itertuples(index=False)) or "(none)"


def publish_rejects(run: RunLayout) -> None:
    """Counts by stage × reason and a sample of rows with their detail, in one markdown artifact."""
    counts, sample = rejects_summary(run)
    if counts.empty:
        return
    create_markdown_artifact(
        key=artifact_key(run, "rejects"),
        markdown=(f"# Rejects\n\nRun folder: `{run.root}`; all of them: `{run.rejects}`\n\n## By stage and reason\n\n"
                  f"{md_table(counts)}\n\n## Sample (up to 3 per stage and reason)\n\n{rejects_list(sample)}\n"),
        description=f"{_count(int(counts['total'].sum()), 'reject')} by stage and reason, with a sample of their details",
    )


def publish_gallery(run: RunLayout, per_outcome: int = 8) -> None:
    """The decision gallery: distilled and rejected pairs, candidate beside its reference, scores, votes."""
    decisions = decision_gallery(run, per_outcome=per_outcome)
    if not decisions:
        return
    kept = sum(d.outcome == "distilled" for d in decisions)
    create_markdown_artifact(
        key=artifact_key(run, "decision-gallery"),
        markdown=("# Decision gallery\n\nSynthetic candidate beside the real-rain reference retrieval found for it, "
                  "the retrieval scores (↓ lower is better, ↑ higher is better) and each judge's vote with its "
                  f"p_real: {kept} distilled and {len(decisions) - kept} rejected pairs.\n\n"
                  + gallery_markdown(decisions) + "\n"),
        description="Why pairs stayed or went: candidate, reference, scores and votes side by side",
    )


def publish_stage(run: RunLayout, stage: str, report: dict) -> None:
    """The artifacts of a stage that did work: its manifest, the funnel, the rejects and its own tables."""
    from tasks.pipeline import spec

    output = spec(stage).output
    publish_manifest(run, output)
    publish_table(run, f"{stage}-report", pd.DataFrame([{k: _cell(v) for k, v in report.items()}]),
                  f"What the {stage} stage skipped, redid and why")
    extra = _EXTRA.get(stage)
    if extra is not None:
        extra(run, output)
    publish_rejects(run)
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
    _preview(run, output)
    votes_md = run.reports / "votes.md"
    if votes_md.is_file():
        create_markdown_artifact(key=artifact_key(run, "votes-md"), markdown=votes_md.read_text(errors="replace"),
                                 description="The cut's votes per judge, agreement and outcome (RUN/reports/votes.md)")
    publish_charts(run, "select-charts", "Select: score histograms",
                   [run.reports / "p_real.png", run.reports / "retrieval_scores.png"],
                   "Judges' p_real with the threshold, and the three retrieval levels' scores with any limits.")
    publish_gallery(run)


_EXTRA = {"ingest": _preview, "retrieve": _preview, "vote": _votes, "select": _select}
