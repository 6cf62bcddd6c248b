"""The shard contract every model stage follows (NeMo-Curator-style stage I/O).

A stage reads an input manifest split into shards by id hash, and for each shard writes
`RUN/manifests/<output>/part-NNNNN.parquet` plus `RUN/manifests/rejects/part-<stage>-NNNNN.parquet`.
Rejects are written first and the output last, so an output shard that exists and validates means
the shard is done: a rerun skips it, and a crash leaves at most a shard to redo.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from data_manifests import RunLayout, get_schema, shard_complete, shard_name, shard_of, write_shard


def output_paths(run: RunLayout, output: str, stage: str, shard: int) -> tuple[Path, Path]:
    return run.manifest(output) / shard_name(shard), run.rejects / shard_name(shard, f"part-{stage}")


def shard_done(run: RunLayout, output: str, stage: str, shard: int) -> bool:
    out, rej = output_paths(run, output, stage, shard)
    return shard_complete(out, get_schema(output)) and shard_complete(rej, get_schema("rejects"))


def write_result(run: RunLayout, output: str, stage: str, shard: int, rows, rejects: list[dict]) -> int:
    """Publish one shard's rows and rejects; returns the number of rows kept."""
    out, rej = output_paths(run, output, stage, shard)
    write_shard(pd.DataFrame(rejects, columns=get_schema("rejects").columns), rej.parent, rej.name, get_schema("rejects"))
    if not isinstance(rows, (pd.DataFrame, pa.Table)):
        rows = pd.DataFrame(rows, columns=get_schema(output).columns)
    write_shard(rows, out.parent, out.name, get_schema(output))
    return len(rows)


def split_shards(frame: pd.DataFrame, key: str, num_shards: int) -> list[pd.DataFrame]:
    """All shards, empty ones included, so a finished stage has every shard file."""
    if frame.empty:
        return [frame.iloc[0:0] for _ in range(num_shards)]
    shard = frame[key].map(lambda i: shard_of(i, num_shards))
    return [frame[shard == i].reset_index(drop=True) for i in range(num_shards)]


def stage_reject(item_id: str, stage: str, reason: str, detail: str, source: str | None = None,
                 path: str | None = None) -> dict:
    return {"item_id": item_id, "stage": stage, "reason": reason, "detail": detail, "source": source, "path": path}


def check_model(run: RunLayout, output: str, model_id: str) -> None:
    """Refuse to mix models in one run: finished shards made by another model are not 'done'."""
    from data_manifests import read_table

    table = read_table(run.manifest(output), get_schema(output), columns=["model"])
    others = sorted(set(table.column("model").to_pylist()) - {model_id})
    if others:
        raise ValueError(
            f"{run.manifest(output)} holds rows made by {others}, this config uses {model_id!r}: "
            f"start a new run folder, or delete manifests/{output} (and later stages) to redo it"
        )
