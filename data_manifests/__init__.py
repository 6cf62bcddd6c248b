"""Manifest schemas, ids, the atomic sharded writer and readers. Imports nothing of the project."""
from .errors import ManifestError
from .ids import bytes_digest, file_digest, image_id, pair_id, shard_of
from .reader import count_rows, iter_manifest, read_manifest, read_table, shard_files
from .levels import RETRIEVAL_LEVELS, SCORE_COLUMNS, RetrievalLevel
from .run import RunError, RunLayout, absolute_paths, relative_to_root
from .degradations import ALL_WEATHER_TYPES, DEGRADATION_TYPES, DegradationType, all_types, order_types, resolve_types
from .schemas import PATH_COLUMNS, RAIN_TYPE_FOLDERS, RAIN_TYPES, REJECT_REASONS, SCHEMAS, TYPE_FOLDERS, ManifestSchema, get_schema
from .writer import FINGERPRINT_KEY, clean_temporaries, read_fingerprint, shard_complete, shard_name, write_shard

__all__ = [
    "ManifestError", "bytes_digest", "file_digest", "image_id", "pair_id", "shard_of",
    "count_rows", "iter_manifest", "read_manifest", "read_table", "shard_files", "RunError", "RunLayout",
    "absolute_paths", "relative_to_root", "RETRIEVAL_LEVELS", "SCORE_COLUMNS", "RetrievalLevel", "PATH_COLUMNS",
    "FINGERPRINT_KEY", "read_fingerprint",
    "ALL_WEATHER_TYPES", "DEGRADATION_TYPES", "DegradationType", "TYPE_FOLDERS", "all_types", "order_types",
    "resolve_types", "RAIN_TYPE_FOLDERS", "RAIN_TYPES", "REJECT_REASONS", "SCHEMAS", "ManifestSchema", "get_schema",
    "clean_temporaries", "shard_complete", "shard_name", "write_shard",
]
