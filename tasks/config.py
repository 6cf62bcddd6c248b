"""Run configuration: one pydantic model per section, unknown keys refused.

A bad config fails at load time with the dotted key in the message (`retrieval.k_visual: ...`).
Stage modules take their own section object, never the raw dict. The `train:` section belongs to
`unirain_model` and is validated by `flows.config.load_run_config`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IngestConfig(Section):
    num_shards: int = Field(16, ge=1, description="shards of every stage of the run, cut by id hash")
    min_side: int = Field(64, ge=1, description="images smaller than this on a side are rejected (too_small)")
    max_pixels: int = Field(89_478_485, ge=1, description="more pixels than this is a decompression bomb")
    chunk_size: int = Field(512, ge=1, description="pairs probed per task")


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
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="vote = p_real >= threshold")
    cascade: bool = True
    timeout_s: float = Field(60.0, gt=0)
    retries: int = Field(2, ge=0)
    backoff_s: float = Field(1.0, ge=0)
    max_concurrency: int = Field(8, ge=1, description="requests in flight per judge")
    chunk_size: int = Field(64, ge=1, description="requests per judge call, cached before the next (>= max_concurrency)")


class SelectConfig(Section):
    min_ssim: float | None = None
    min_image_cos: float | None = None
    max_text_l2: float | None = None


class TaskRunnerConfig(Section):
    kind: Literal["thread", "dask"] = "thread"
    address: str | None = Field(None, description="existing Dask scheduler; a local cluster when absent")
    workers: int = Field(2, ge=1)


class ModelsConfig(Section):
    captioner: ModelRef | None = None
    embedder: ModelRef | None = None
    judges: list[ModelRef] = Field(default_factory=list)


class RunConfig(Section):
    sources: list[str] = Field(default_factory=list, description="NAME=PATH or NAME:TYPE=PATH")
    gallery: list[str] = Field(default_factory=list)
    ingest: IngestConfig = IngestConfig()
    models: ModelsConfig = ModelsConfig()
    caption: CaptionConfig = CaptionConfig()
    embed: EmbedConfig = EmbedConfig()
    index: IndexConfig = IndexConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    vote: VoteConfig = VoteConfig()
    select: SelectConfig = SelectConfig()
    task_runner: TaskRunnerConfig = TaskRunnerConfig()
    train: dict[str, Any] = Field(default_factory=dict)
    evaluate: dict[str, Any] = Field(default_factory=dict)


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        lines.append(f"{key or '(top level)'}: {err['msg']}")
    return "; ".join(lines)


def parse_run_config(data: dict[str, Any] | None, origin: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {format_validation_error(exc)}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data
