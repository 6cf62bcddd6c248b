"""Manifest schemas. Each carries its name and version in the Parquet metadata."""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from .degradations import RAIN_TYPES as _RAIN_TYPES
from .degradations import type_folders
from .levels import SCORE_COLUMNS

META_NAME = b"unirain.manifest"
META_VERSION = b"unirain.schema_version"

# The `rain_type` column holds a declared degradation type (data_manifests/degradations.py): the four
# rain types (the default set) or an all-weather one (snow, fog). Still a string column: no version bump.
RAIN_TYPES = _RAIN_TYPES
RAIN_TYPE_FOLDERS = {k: v for k, v in type_folders().items() if k in _RAIN_TYPES}
TYPE_FOLDERS = type_folders()  # every declared type

# The fixed vocabulary of reject reasons; `detail` carries the specifics.
REJECT_REASONS = frozenset({
    "unreadable",          # empty, truncated, not an image
    "unsupported_format",  # an image format we do not accept
    "too_small",
    "decompression_bomb",
    "size_mismatch",       # rainy and clean differ in size
    "missing_clean",       # a rainy file without its clean twin
    "missing_rainy",       # a clean file without its rainy twin
    "not_a_file",          # a FIFO, socket, device or folder (link) where a file was listed
    "duplicate",           # the same pair (same bytes) listed again
    "preprocess_error",    # decoded, but the model's preprocessing failed on it
    "bad_embedding",       # NaN or infinite embedding
    "no_reference",        # retrieval found no gallery match
    "judge_error",         # judges failed to give enough votes
    "undecided",           # too few valid votes to decide; retried on the next run
    "voted_out",
    "below_threshold",     # a retrieval score under the configured minimum
    "test_leak",           # a near duplicate of a benchmark test image (leak_check.test_sets)
    "no_rain",             # sanity: input and target (nearly) identical
    "unrelated_target",    # sanity: the target shows another scene
    "misaligned",          # sanity: the target is shifted from its input
    "blurry_target",       # sanity: the target is much softer than its input (blur)
    "jpeg_target",         # sanity: the target shows JPEG blocking its input does not (re-encoded at a low quality)
    "color_shift",         # sanity: colours or exposure disagree beyond what a rain veil explains
})


@dataclass(frozen=True)
class ManifestSchema:
    name: str
    version: int
    schema: pa.Schema
    key: str  # the id column
    sort_by: tuple[str, ...] = ()  # row order inside a shard, so reruns write identical files

    @property
    def order(self) -> list[str]:
        return list(self.sort_by or (self.key,))

    @property
    def arrow(self) -> pa.Schema:
        return self.schema.with_metadata({META_NAME: self.name.encode(), META_VERSION: str(self.version).encode()})

    @property
    def columns(self) -> list[str]:
        return self.schema.names


SCHEMAS: dict[str, ManifestSchema] = {}


def register(name: str, version: int, key: str, fields: list[pa.Field], sort_by=()) -> ManifestSchema:
    schema = ManifestSchema(name, version, pa.schema(fields), key, tuple(sort_by))
    SCHEMAS[name] = schema
    return schema


def get_schema(name: str) -> ManifestSchema:
    try:
        return SCHEMAS[name]
    except KeyError:
        raise KeyError(f"unknown manifest {name!r}; known: {', '.join(sorted(SCHEMAS))}") from None


def f(name, type_, nullable=False):
    return pa.field(name, type_, nullable=nullable)


# Image paths in `candidates`, `gallery` and `distilled` are relative to their source's root; the
# run's run.json maps each source to its root (`RunLayout.absolute_paths`), so a run and its data
# can move to another machine (`unirain relocate`). Version 2: relative paths.
PATH_COLUMNS = {"candidates": ("rainy_path", "clean_path"), "gallery": ("path",),
                "distilled": ("rainy_path", "clean_path")}

CANDIDATE_FIELDS = [
    f("pair_id", pa.string()),
    f("source", pa.string()),
    f("rain_type", pa.string()),
    f("rainy_path", pa.string()),
    f("clean_path", pa.string()),
    f("width", pa.int32()),
    f("height", pa.int32()),
    f("rainy_id", pa.string()),
    f("clean_id", pa.string()),
    f("rain_type_inferred", pa.bool_()),
]

CANDIDATES = register("candidates", 2, "pair_id", CANDIDATE_FIELDS)

GALLERY = register("gallery", 2, "image_id", [
    f("image_id", pa.string()),
    f("source", pa.string()),
    f("path", pa.string()),
    f("width", pa.int32()),
    f("height", pa.int32()),
])

CAPTIONS = register("captions", 1, "item_id", [
    f("item_id", pa.string()),
    f("kind", pa.string()),  # "gallery" or "candidate"
    f("caption", pa.string()),
    f("model", pa.string()),
], sort_by=("item_id", "kind"))

EMBEDDINGS = register("embeddings", 1, "item_id", [
    f("item_id", pa.string()),
    f("kind", pa.string()),
    f("text_emb", pa.list_(pa.float16())),
    f("image_emb", pa.list_(pa.float16())),
    f("model", pa.string()),
], sort_by=("item_id", "kind"))

RETRIEVAL = register("retrieval", 1, "pair_id", [
    f("pair_id", pa.string()),
    f("ref_id", pa.string()),
    *(f(score, pa.float32()) for score in SCORE_COLUMNS),  # one per retrieval level
    f("semantic_ids", pa.list_(pa.string())),
    f("visual_ids", pa.list_(pa.string())),
])

# One row per candidate the leak check saw (tasks/leak): the closest test hash in bits, the best match
# within leak_check.max_distance and its confirmation scores; null where no test set is configured.
LEAK_CHECK = register("leak_check", 1, "pair_id", [
    f("pair_id", pa.string()),
    f("min_test_distance", pa.int16(), nullable=True),
    f("nearest_test", pa.string(), nullable=True),
    f("leak_image", pa.string(), nullable=True),   # "clean" or "rainy": the image that matched
    f("test_distance", pa.int16(), nullable=True),
    f("test_correlation", pa.float32(), nullable=True),
    f("clip_cos", pa.float32(), nullable=True),
    f("test_leak", pa.bool_()),
])

# Version 2: `judge` is the judge's short name (reports and reject details use the same), the model id
# is `judge_model`. `ref_id` is "" when the judges saw no reference (vote.reference: false).
# One row per candidate the sanity stage scored (tasks/sanity): one score per check, whether or not the
# check is on (null where a score is undefined, e.g. a flat image), the first failed check's reason and `passed`.
SANITY = register("sanity", 2, "pair_id", [  # version 2: jpeg_blocking
    f("pair_id", pa.string()),
    f("diff_p999", pa.float32(), nullable=True),            # no_rain
    f("lowpass_structure", pa.float32(), nullable=True),   # unrelated_target
    f("shift_px", pa.float32(), nullable=True),            # misaligned
    f("sharpness_ratio", pa.float32(), nullable=True),     # blurry_target
    f("jpeg_blocking", pa.float32(), nullable=True),       # jpeg_target
    f("color_shift", pa.float32(), nullable=True),         # color_shift
    f("reason", pa.string(), nullable=True),
    f("passed", pa.bool_()),
])

VOTES = register("votes", 2, "pair_id", [
    f("pair_id", pa.string()),
    f("ref_id", pa.string()),
    f("judge", pa.string()),
    f("judge_model", pa.string()),
    f("p_real", pa.float32(), nullable=True),
    f("vote", pa.bool_(), nullable=True),  # null = abstention, never a yes or a no
    f("error", pa.string(), nullable=True),
    f("prompt_version", pa.string()),
], sort_by=("pair_id", "judge"))

DISTILLED = register("distilled", 2, "pair_id", CANDIDATE_FIELDS + [
    f("ref_id", pa.string()),
    f("n_yes", pa.int32()),
    f("n_votes", pa.int32()),
])

REJECTS = register("rejects", 1, "item_id", [
    f("item_id", pa.string()),
    f("stage", pa.string()),
    f("reason", pa.string()),
    f("detail", pa.string()),
    f("source", pa.string(), nullable=True),
    f("path", pa.string(), nullable=True),
], sort_by=("stage", "item_id", "reason", "detail"))
