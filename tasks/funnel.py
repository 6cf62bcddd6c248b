"""The funnel: per source and per stage, how many items were kept and how many rejected, by reason."""
from __future__ import annotations

import pandas as pd

from data_manifests import RunLayout, read_manifest
from data_manifests.reader import shard_files

from .pipeline import PIPELINE

# stage -> (manifest, id column, row filter on that manifest), from the one stage declaration;
# candidates flow through all of them.
STAGES = [(s.name, s.output, s.key, s.funnel_filter) for s in PIPELINE]
COLUMNS = ["source", "stage", "kept", "rejected", "reasons"]


def _reasons(frame: pd.DataFrame) -> str:
    counts = frame["reason"].value_counts()
    return ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items()))


def funnel_table(run: RunLayout) -> pd.DataFrame:
    candidates = read_manifest(run.manifest("candidates"), "candidates", columns=["pair_id", "source"])
    rejects = read_manifest(run.rejects, "rejects")
    source_of = dict(zip(candidates["pair_id"], candidates["source"]))
    rows = []
    for stage, manifest, id_col, row_filter in STAGES:
        folder = run.manifest(manifest)
        stage_rejects = rejects[rejects["stage"] == stage]
        if not shard_files(folder) and not len(stage_rejects):
            continue
        columns = [id_col] + ([row_filter[0]] if row_filter else [])  # never the embedding vectors
        kept = read_manifest(folder, manifest, columns=columns)
        if row_filter and len(kept):
            kept = kept[kept[row_filter[0]] == row_filter[1]]
        kept_sources = kept[id_col].drop_duplicates().map(source_of).dropna() if len(kept) else pd.Series([], dtype=str)
        kept_counts = kept_sources.value_counts()
        reject_sources = stage_rejects["source"].fillna("(unknown)")
        if stage != "ingest":
            reject_sources = stage_rejects["item_id"].map(source_of).fillna(reject_sources)
        stage_rejects = stage_rejects.assign(source=reject_sources)
        if stage == "ingest":  # gallery images live beside candidates at ingest
            gallery = read_manifest(run.manifest("gallery"), "gallery", columns=["source"])
            kept_counts = pd.concat([kept_counts, ("gallery:" + gallery["source"]).value_counts()])
            gallery_rejects = ~stage_rejects["source"].isin(set(candidates["source"]) | set(kept_counts.index))
            stage_rejects.loc[gallery_rejects, "source"] = "gallery:" + stage_rejects.loc[gallery_rejects, "source"]
        for source in sorted(set(kept_counts.index) | set(stage_rejects["source"])):
            mine = stage_rejects[stage_rejects["source"] == source]
            rows.append({"source": source, "stage": stage, "kept": int(kept_counts.get(source, 0)),
                         "rejected": len(mine), "reasons": _reasons(mine)})
    return pd.DataFrame(rows, columns=COLUMNS)


def format_table(frame: pd.DataFrame) -> str:
    """A plain-text table for terminals (markdown-compatible)."""
    if frame.empty:
        return "(no rows)"
    cells = [list(map(str, frame.columns))] + [[str(v) for v in row] for row in frame.itertuples(index=False)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(frame.columns))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells[1:]])
