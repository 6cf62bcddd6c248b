"""Read a manifest folder as one dataset, refusing files written with an unknown schema version."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .errors import ManifestError
from .schemas import META_NAME, META_VERSION, ManifestSchema, get_schema


def shard_files(manifest_dir: str | os.PathLike, prefix: str = "") -> list[Path]:
    """The published shards, sorted; temporary files (leading '.') are not shards."""
    folder = Path(manifest_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f"{prefix}*.parquet") if not p.name.startswith((".", "_")))


def check_file_schema(path: Path, schema: ManifestSchema) -> None:
    try:
        meta = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError) as exc:
        raise ManifestError(f"{path}: not a readable Parquet shard ({exc})") from None
    name = meta.get(META_NAME, b"").decode()
    version = meta.get(META_VERSION, b"").decode()
    if name != schema.name:
        raise ManifestError(f"{path}: holds manifest {name or '(none)'!r}, expected {schema.name!r}")
    if version != str(schema.version):
        older = version.isdigit() and int(version) < schema.version
        fix = ("written by an older UniRain: start a new run folder (or delete this manifest and rerun its stage)"
               if older else "re-run the stage or upgrade UniRain")
        raise ManifestError(
            f"{path}: written with {schema.name} schema version {version or '(none)'}, "
            f"this UniRain reads version {schema.version}; {fix}"
        )


def _dataset(manifest_dir, schema: ManifestSchema | str, prefix: str = "") -> ds.Dataset | None:
    schema = get_schema(schema) if isinstance(schema, str) else schema
    files = shard_files(manifest_dir, prefix)
    for path in files:
        check_file_schema(path, schema)
    if not files:
        return None
    return ds.dataset([str(p) for p in files], schema=schema.arrow, format="parquet")


def read_table(manifest_dir, schema: ManifestSchema | str, columns=None, prefix: str = "",
               filter: "ds.Expression | None" = None) -> pa.Table:
    """`filter` (a `pyarrow.dataset` expression) is applied while scanning, batch by batch, so rows
    it drops are never held in memory together."""
    schema = get_schema(schema) if isinstance(schema, str) else schema
    dataset = _dataset(manifest_dir, schema, prefix)
    if dataset is None:
        table = schema.arrow.empty_table()
        return table.select(columns) if columns else table
    return dataset.to_table(columns=columns, filter=filter)


def read_manifest(manifest_dir, schema: ManifestSchema | str, columns=None, prefix: str = "") -> pd.DataFrame:
    """The whole manifest folder as one DataFrame (empty with the right columns when absent)."""
    return read_table(manifest_dir, schema, columns, prefix).to_pandas()


def iter_manifest(manifest_dir, schema: ManifestSchema | str, columns=None, batch_size: int = 65536) -> Iterator[pd.DataFrame]:
    """Stream a manifest in bounded batches, for stages that must not load everything."""
    dataset = _dataset(manifest_dir, schema)
    if dataset is None:
        return
    for batch in dataset.to_batches(columns=columns, batch_size=batch_size):
        if batch.num_rows:
            yield batch.to_pandas()


def count_rows(manifest_dir, schema: ManifestSchema | str) -> int:
    dataset = _dataset(manifest_dir, schema)
    return 0 if dataset is None else dataset.count_rows()
