"""Turn rows into a table that matches a schema exactly, or say which column is wrong."""
from __future__ import annotations

import pandas as pd
import pyarrow as pa

from .errors import ManifestError
from .degradations import all_types
from .schemas import REJECT_REASONS, ManifestSchema


def to_table(rows, schema: ManifestSchema) -> pa.Table:
    """Rows (DataFrame, list of dicts, or Table) -> a Table with the schema's columns, order and types."""
    if isinstance(rows, pa.Table):
        table = rows
    else:
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        missing = [c for c in schema.columns if c not in frame.columns]
        if missing and len(frame):
            raise ManifestError(f"{schema.name}: missing column(s) {missing}")
        if not len(frame):
            return schema.arrow.empty_table()
        table = pa.Table.from_pandas(frame, preserve_index=False)
    missing = [c for c in schema.columns if c not in table.column_names]
    if missing:
        raise ManifestError(f"{schema.name}: missing column(s) {missing}")
    table = table.select(schema.columns)
    try:
        table = table.cast(schema.arrow)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise ManifestError(f"{schema.name}: columns do not match the schema: {exc}") from None
    validate_table(table, schema)
    return table


def validate_table(table: pa.Table, schema: ManifestSchema) -> None:
    for field in schema.schema:
        if not field.nullable and table.column(field.name).null_count:
            raise ManifestError(f"{schema.name}: column {field.name!r} has null values")
    if "rain_type" in table.column_names:
        bad = set(table.column("rain_type").to_pylist()) - set(all_types())
        if bad:
            raise ManifestError(f"{schema.name}: unknown rain_type {sorted(bad)}; expected one of {all_types()}")
    if schema.name == "rejects":
        bad = set(table.column("reason").to_pylist()) - REJECT_REASONS
        if bad:
            raise ManifestError(f"rejects: reason(s) {sorted(bad)} not in the vocabulary {sorted(REJECT_REASONS)}")
