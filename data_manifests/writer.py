"""Atomic shard writes: a shard is written under a temporary name and renamed into place.

A crash at any moment leaves only complete shards (temporary files start with '.', which
Parquet dataset readers ignore), so a rerun neither loses nor duplicates rows.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import ManifestError
from .reader import check_file_schema
from .schemas import ManifestSchema
from .validate import to_table


def shard_name(shard: int | str, prefix: str = "part") -> str:
    label = f"{shard:05d}" if isinstance(shard, int) else str(shard)
    return f"{prefix}-{label}.parquet"


def write_shard(rows, manifest_dir: str | os.PathLike, name: str, schema: ManifestSchema,
                metadata: dict[bytes, bytes] | None = None) -> Path:
    """Validate rows against the schema, sort them, and publish `manifest_dir/name` atomically.
    `metadata` adds stage-specific Parquet metadata beside the schema's name and version."""
    table = to_table(rows, schema)
    if table.num_rows:
        table = table.take(pc.sort_indices(table, [(c, "ascending") for c in schema.order]))
    if metadata:
        table = table.replace_schema_metadata({**table.schema.metadata, **metadata})
    out_dir = Path(manifest_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / name
    tmp = out_dir / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def shard_complete(path: str | os.PathLike, schema: ManifestSchema) -> bool:
    """True when the shard exists, reads as Parquet and was written with this schema and version."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        check_file_schema(path, schema)
        pq.ParquetFile(path).metadata  # footer readable: the file is whole
    except (ManifestError, pa.ArrowException, OSError):
        return False
    return True


def clean_temporaries(manifest_dir: str | os.PathLike) -> int:
    """Remove temporary files a crashed writer left behind; returns how many."""
    removed = 0
    for tmp in Path(manifest_dir).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


FINGERPRINT_KEY = b"unirain.fingerprint"


def read_fingerprint(path: str | os.PathLike, schema: ManifestSchema) -> str | None:
    """The stage fingerprint stored in a shard's Parquet metadata (None when it has none).
    Raises ManifestError / ArrowException / OSError when the file is not a whole shard of `schema`."""
    path = Path(path)
    check_file_schema(path, schema)  # reads the footer: a truncated file fails here
    value = (pq.read_schema(path).metadata or {}).get(FINGERPRINT_KEY)
    return value.decode() if value else None
