"""The run configuration, one module: every section a `Section` (unknown keys refused), one loader.

`load_run_config(path)` reads the YAML (after the config it `extends:`, if any), resolves relative paths
from the config's folder (never the working directory), and validates everything in one pass, the model library's `train:` and
`evaluate:` sections included (`unirain_model.config.TrainConfig` / `EvalConfig`), so a wrong key
anywhere fails at once with the dotted key in the message (`retrieval.k_visual: ...`). Stage
modules take their own section object, never the raw dict.

Paths: `sources:` and `gallery:` folders, `evaluate.data` / `evaluate.manifests` and `train.model`
are paths. A model `name` / `pretrained` is a path when it starts with `./`, `../`, `~` or
`local-dir:` (or names something that exists beside the config); anything else (`openai`,
`Salesforce/blip-image-captioning-large`) is a hub id and kept as written. `train.model` must exist
(the error names the resolved path); a local model must exist when a stage needs it
(`require_local_model`, same wording).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, create_model, field_validator, model_validator

from data_manifests.config_base import (ConfigError, Section, config_chain, format_validation_error, load_yaml,
                                        merge_config, parse_section, resolve_path)
from data_manifests.levels import RETRIEVAL_LEVELS
from unirain_model.config import EvalConfig, TrainConfig

__all__ = [
    "ConfigError", "Section", "IngestConfig", "LeakCheckConfig", "SanityCheckConfig", "SanityConfig", "ModelRef", "CaptionConfig", "EmbedConfig", "IndexConfig",
    "RetrievalConfig", "VoteConfig", "SelectConfig", "TaskRunnerConfig", "ModelsConfig", "RunConfig",
    "format_validation_error", "parse_run_config", "load_yaml", "load_run_config", "require_local_model",
]


class IngestConfig(Section):
    num_shards: int = Field(16, ge=1, description="shards of every stage of the run, cut by id hash; fixed "
                                                  "when the run is created (RUN/run.json)")
    min_side: int = Field(64, ge=1, description="images smaller than this on a side are rejected (too_small)")
    max_pixels: int = Field(89_478_485, ge=1, description="more pixels than this is a decompression bomb")
    chunk_size: int = Field(512, ge=1, description="pairs probed per task")


class LeakCheckConfig(Section):
    """The test-set leak check (`tasks/leak`): no candidate may copy an image of a benchmark test set."""

    test_sets: list[str] = Field(default_factory=list, description="benchmark test sets, ADAPTER[.LABEL][:TYPE]=PATH "
                                                                   "like sources: (relative to the config's folder)")
    max_distance: int = Field(12, ge=0, le=64, description="perceptual-hash bits (of 64) within which a test image "
                                                           "(at any of its crops) is a match to confirm")
    min_correlation: float = Field(0.85, ge=-1.0, le=1.0, description="low-frequency correlation that confirms a "
                                                                      "hash match (copies >= 0.93, unrelated <= 0.67)")
    clip_min_cos: float | None = Field(0.8, ge=-1.0, le=1.0, description="with models.embedder set, a match also needs "
                                                                          "this CLIP image cosine; null: hashes only")


class SanityCheckConfig(Section):
    """One sanity check: on or off, and the threshold its score is cut at (`tasks/sanity/checks.py`)."""

    enabled: bool = True
    threshold: float


class SanityConfig(Section):
    """Model-free pair checks (`sanity` stage, `tasks/sanity`); defaults measured on the planted set
    (`benchmarks/bench_sanity.py`, table in benchmarks/RESULTS.md). Each score is in the `sanity` manifest."""

    min_side: int = Field(96, ge=1, description="pairs under this many pixels on a side are scored but never rejected: "
                                                "the thresholds were measured on 96 px to 512 px pairs, and at 64 px a "
                                                "synthetic drop pair may hold one visible drop")
    no_rain: SanityCheckConfig = Field(SanityCheckConfig(threshold=4.0), description=(
        "reject when the 99.9th percentile of |input - target| (3x3 averaged, grey levels) is below threshold"))
    unrelated_target: SanityCheckConfig = Field(SanityCheckConfig(threshold=0.35), description=(
        "reject when the low-passed structure correlation is below threshold"))
    misaligned: SanityCheckConfig = Field(SanityCheckConfig(threshold=2.0), description=(
        "reject when the phase-correlation shift (pixels of the original image) is above threshold"))
    blurry_target: SanityCheckConfig = Field(SanityCheckConfig(threshold=0.3), description=(
        "reject when target / input |Laplacian| at the scene's edges is below threshold"))
    jpeg_target: SanityCheckConfig = Field(SanityCheckConfig(threshold=0.35), description=(
        "reject when the target's JPEG block-grid edges exceed the input's by more than threshold (relative to the "
        "content's; not judged when blocks are under 4 px of the 256-px view, i.e. images over ~512 px)"))
    color_shift: SanityCheckConfig = Field(SanityCheckConfig(threshold=0.07), description=(
        "reject when the colour disagreement beyond a grey veil is above threshold (not judged on fog and night pairs)"))

    @model_validator(mode="before")
    @classmethod
    def _merge_defaults(cls, data: Any) -> Any:
        """`misaligned: {enabled: false}` keeps the default threshold (and `{threshold: 3}` stays on)."""
        if isinstance(data, dict):
            data = {k: ({**cls.model_fields[k].default.model_dump(), **v}
                        if isinstance(v, dict) and isinstance(getattr(cls.model_fields.get(k), "default", None), Section)
                        else v) for k, v in data.items()}
        return data


class ModelRef(Section):
    """A model: a backend from a registry plus where its weights are (hub name or local dir)."""

    backend: str
    name: str = Field(description="checkpoint name, local folder, or open_clip model name")
    pretrained: str | None = Field(None, description="open_clip pretrained tag or local checkpoint file")
    options: dict[str, Any] = Field(default_factory=dict)


class CaptionConfig(Section):
    batch_size: int = Field(8, ge=1)
    num_workers: int = Field(2, ge=0)
    max_new_tokens: int = Field(20, ge=1)


class EmbedConfig(Section):
    batch_size: int = Field(32, ge=1)
    num_workers: int = Field(2, ge=0)


class IndexConfig(Section):
    kind: Literal["flat", "ivf", "hnsw"] = "flat"
    nlist: int = Field(1024, ge=1, description="IVF lists")
    nprobe: int = Field(32, ge=1, description="IVF lists searched")
    hnsw_m: int = Field(32, ge=2)


class RetrievalConfig(Section):
    k_semantic: int = Field(50, ge=1, description="level 1: gallery items kept by caption-text L2")
    k_visual: int = Field(10, ge=1, description="level 2: of those, kept by image cosine")
    ssim_size: int = Field(256, ge=8, description="level 3: grayscale side for SSIM")
    batch_size: int = Field(1024, ge=1)

    @model_validator(mode="after")
    def _visual_within_semantic(self):
        if self.k_visual > self.k_semantic:
            raise ValueError(f"k_visual ({self.k_visual}) must not exceed k_semantic ({self.k_semantic})")
        return self


class VoteConfig(Section):
    enabled: bool = Field(True, description="false: the paper's 'no generation stage' ablation: no judge is loaded "
                                            "or called, select keeps what passed retrieval (and the select: limits)")
    reference: bool = Field(True, description="false: the paper's 'VLM only (no RAG)' ablation: judges see the "
                                              "candidate alone, with a question that names no reference")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="vote = p_real >= threshold")
    cascade: bool = True
    timeout_s: float = Field(60.0, gt=0)
    retries: int = Field(2, ge=0)
    backoff_s: float = Field(1.0, ge=0)
    max_concurrency: int = Field(8, ge=1, description="requests in flight per judge")
    chunk_size: int = Field(64, ge=1, description="requests per judge call, cached before the next (>= max_concurrency)")


# One optional limit per retrieval level (`data_manifests.levels`): min_ssim, min_image_cos, max_text_l2.
SelectConfig = create_model(
    "SelectConfig", __base__=Section, __doc__="Optional limits on the retrieval scores, applied by select.",
    **{level.limit_key: (float | None, Field(None, description=f"{level.name} level: reject a pair whose "
                                                              f"{level.score} is {level.fail_sign} this"))
       for level in RETRIEVAL_LEVELS},
)


class TaskRunnerConfig(Section):
    kind: Literal["thread", "dask"] = "thread"
    address: str | None = Field(None, description="existing Dask scheduler; a local cluster when absent")
    workers: int = Field(2, ge=1)


class ModelsConfig(Section):
    captioner: ModelRef | None = None
    embedder: ModelRef | None = None
    judges: list[ModelRef] = Field(default_factory=list)


class RunConfig(Section):
    types: list[str] | str | None = Field(
        None, description="the degradation types this run trains and evaluates on: keys (day_streak, ..., snow, fog), "
                          "families (rain, snow, fog) or all; default the four rain types (data_manifests/degradations.py)")
    sources: list[str] = Field(default_factory=list, description="NAME=PATH or NAME:TYPE=PATH")

    @field_validator("types")
    @classmethod
    def _declared_types(cls, v: Any) -> Any:
        from data_manifests.degradations import resolve_types

        return None if v is None else list(resolve_types(v, key=""))
    gallery: list[str] = Field(default_factory=list)
    ingest: IngestConfig = IngestConfig()
    leak_check: LeakCheckConfig = LeakCheckConfig()
    sanity: SanityConfig = SanityConfig()
    models: ModelsConfig = ModelsConfig()
    caption: CaptionConfig = CaptionConfig()
    embed: EmbedConfig = EmbedConfig()
    index: IndexConfig = IndexConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    vote: VoteConfig = VoteConfig()
    select: SelectConfig = SelectConfig()
    task_runner: TaskRunnerConfig = TaskRunnerConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _limits_need_retrieval(self):
        if not self.vote.reference:
            limits = sorted(k for k, v in self.select.model_dump().items() if v is not None)
            if limits:
                raise ValueError(f"select.{limits[0]}: retrieval scores are not used with vote.reference: false "
                                 "(VLM only, no RAG); remove the select: limits")
        return self

    @property
    def num_shards_explicit(self) -> bool:
        """Whether the config sets ingest.num_shards (else an existing run's own count is used)."""
        return "num_shards" in self.ingest.model_fields_set


def parse_run_config(data: dict[str, Any] | None, origin: str = "config") -> RunConfig:
    return parse_section(RunConfig, data, "", origin)


def _looks_like_path(value: str, base: Path) -> bool:
    raw = value[len("local-dir:"):] if value.startswith("local-dir:") else value
    return (value.startswith("local-dir:") or raw.startswith(("./", "../", "~", "/")) or raw in (".", "..")
            or (base / raw).exists())


def _model_path(value: str, base: Path, key: str, origin: str) -> str:
    if not _looks_like_path(value, base):
        return value  # a hub id or an open_clip name
    return resolve_path(value, base)  # checked by the stage that loads it (`require_local_model`)


def require_local_model(ref: ModelRef, key: str, backend: Any = None) -> None:
    """A model given as a local path must exist; the error names the key and the resolved path.
    Checked when a stage needs the model, so `ingest` or `select` run before the models are there.
    A backend class's `folder_kind` (what, accepts(path)) also refuses a folder of the wrong kind,
    judged from its config files without loading weights (`tasks.model_kind`)."""
    kind = getattr(backend, "folder_kind", None)
    for field in ("name", "pretrained"):
        value = getattr(ref, field)
        if isinstance(value, str) and value.startswith(("/", "local-dir:/")):
            path = Path(value.removeprefix("local-dir:"))
            if not path.exists():
                raise ConfigError(f"{key}.{field}: local model not found: {path} (relative paths in a config are "
                                  "read from the config's folder)")
            if kind is not None and field == "name":
                from tasks.model_kind import require_kind

                require_kind(path, f"{key}.{field}", kind[0], kind[1])


def resolve_config_paths(data: dict[str, Any], base: Path, origin: str = "config") -> dict[str, Any]:
    """Every path of a raw config read from `base` (the config's folder); see the module docstring."""
    data = dict(data)
    if isinstance(data.get("sources"), list):
        sources = []
        for spec in data["sources"]:
            name, sep, path = str(spec).partition("=")
            sources.append(f"{name}={resolve_path(path, base)}" if sep else spec)
        data["sources"] = sources
    if isinstance(data.get("leak_check"), dict) and isinstance(data["leak_check"].get("test_sets"), list):
        tests = []
        for spec in data["leak_check"]["test_sets"]:
            name, sep, path = str(spec).partition("=")
            tests.append(f"{name}={resolve_path(path, base)}" if sep else spec)
        data["leak_check"] = {**data["leak_check"], "test_sets": tests}
    if isinstance(data.get("gallery"), list):
        data["gallery"] = [resolve_path(str(p), base) for p in data["gallery"]]
    if isinstance(data.get("models"), dict):
        models = dict(data["models"])
        for key in ("captioner", "embedder"):
            if isinstance(models.get(key), dict):
                models[key] = _resolve_ref(models[key], base, f"models.{key}", origin)
        if isinstance(models.get("judges"), list):
            models["judges"] = [_resolve_ref(r, base, f"models.judges[{i}]", origin) if isinstance(r, dict) else r
                                for i, r in enumerate(models["judges"])]
        data["models"] = models
    if isinstance(data.get("train"), dict) and isinstance(data["train"].get("model"), str):
        from unirain_model.config import resolve_model_path

        try:
            data["train"] = {**data["train"], "model": str(resolve_model_path(data["train"]["model"], base))}
        except ConfigError as exc:
            raise ConfigError(f"{origin}: {exc}") from None
    if isinstance(data.get("evaluate"), dict):
        ev = dict(data["evaluate"])
        for key in ("data", "manifests"):
            if isinstance(ev.get(key), list):
                ev[key] = [resolve_path(str(p), base) for p in ev[key]]
        data["evaluate"] = ev
    return data


def _resolve_ref(ref: dict[str, Any], base: Path, key: str, origin: str) -> dict[str, Any]:
    ref = dict(ref)
    for field in ("name", "pretrained"):
        if isinstance(ref.get(field), str):
            ref[field] = _model_path(ref[field], base, f"{key}.{field}", origin)
    return ref


def load_config_data(path: str | Path) -> dict[str, Any]:
    """A config's raw data with its paths resolved, after its `extends:` chain: `extends: ../paper.yaml`
    (relative to this file) loads that config first, each file's paths read from its own folder, and
    lays this file's keys over it (`configs/ablations/`)."""
    data: dict[str, Any] = {}
    for file, own in config_chain(path):
        data = merge_config(data, resolve_config_paths(own, file.parent.resolve(), str(file)))
    return data


def load_run_config(path: str | Path) -> RunConfig:
    """The whole run config, validated in one pass, paths resolved from the config's folder."""
    path = Path(path)
    data = load_config_data(path)
    cfg = parse_run_config(data, str(path))
    if "model" not in (data.get("train") or {}) and isinstance(cfg.train.model, str):
        from unirain_model.config import resolve_model_path  # the built-in default: a file of the repository

        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"model": str(resolve_model_path(cfg.train.model))})})
    from tasks.model_options import validate_models  # each backend's `options:`, named by key

    validate_models(cfg.models, origin=str(path))
    return cfg
