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


def read_intact(folder, manifest: str, columns=None, damaged: list | None = None) -> pd.DataFrame:
    """`read_manifest`, or with `damaged` given: the readable shards only, each unreadable one (truncated,
    corrupt, another schema) appended to `damaged` as (path, why) instead of failing the whole read."""
    if damaged is None:
        return read_manifest(folder, manifest, columns=columns)
    import pyarrow as pa
    import pyarrow.parquet as pq

    from data_manifests import ManifestError, get_schema
    from data_manifests.reader import check_file_schema

    schema = get_schema(manifest)
    frames = [schema.arrow.empty_table().select(columns or schema.arrow.names).to_pandas()]
    for path in shard_files(folder):
        try:
            check_file_schema(path, schema)
            frames.append(pq.read_table(path, columns=columns, schema=schema.arrow).to_pandas())
        except (ManifestError, pa.ArrowException, OSError) as exc:
            damaged.append((path, str(exc).splitlines()[0][:200]))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def funnel_table(run: RunLayout, damaged: list | None = None) -> pd.DataFrame:
    """Kept and rejected per source and stage. With `damaged` (a list), unreadable shards are left out
    and listed there as (path, why) instead of failing the table (`unirain inspect`)."""
    candidates = read_intact(run.manifest("candidates"), "candidates", ["pair_id", "source"], damaged)
    rejects = read_intact(run.rejects, "rejects", None, damaged)
    source_of = dict(zip(candidates["pair_id"], candidates["source"]))
    rows = []
    for stage, manifest, id_col, row_filter in STAGES:
        folder = run.manifest(manifest)
        stage_rejects = rejects[rejects["stage"] == stage]
        if not shard_files(folder) and not len(stage_rejects):
            continue
        columns = [id_col] + ([row_filter[0]] if row_filter else [])  # never the embedding vectors
        kept = read_intact(folder, manifest, columns, damaged)
        if row_filter and len(kept):
            kept = kept[kept[row_filter[0]] == row_filter[1]]
        kept_sources = kept[id_col].drop_duplicates().map(source_of).dropna() if len(kept) else pd.Series([], dtype=str)
        kept_counts = kept_sources.value_counts()
        reject_sources = stage_rejects["source"].fillna("(unknown)")
        if stage != "ingest":
            reject_sources = stage_rejects["item_id"].map(source_of).fillna(reject_sources)
        stage_rejects = stage_rejects.assign(source=reject_sources)
        if stage == "ingest":  # gallery images live beside candidates at ingest
            gallery = read_intact(run.manifest("gallery"), "gallery", ["source"], damaged)
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
