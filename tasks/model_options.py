"""Model backend options, validated when the config is loaded, not when the model is built.

Each captioner, embedder and judge backend declares its `options:` as a `Section` (`Options` on the
class, unknown keys refused), so a typo such as `batch_sise` is a `ConfigError` naming the key
(`config.yaml: models.judges[1].options.batch_sise: Extra inputs are not permitted`) before any
stage runs. The backends parse their options through `parse_options` as well, so a model built
outside a config (a test, `serve-judge`) gets the same check.
"""
from __future__ import annotations

from typing import Any, Literal, Mapping

from data_manifests.config_base import ConfigError, Section, parse_section
from data_manifests.registry import Registry, RegistryError

ModelKind = Literal["captioner", "embedder", "judge"]


def model_registry(kind: ModelKind) -> Registry:
    """The registry of one model kind (imported here, not at the top: the backends import this module)."""
    if kind == "captioner":
        from tasks.caption.backends import CAPTIONERS

        return CAPTIONERS
    if kind == "embedder":
        from tasks.embed.backends import EMBEDDERS

        return EMBEDDERS
    if kind == "judge":
        from tasks.vote.judges.base import JUDGES

        return JUDGES
    raise ValueError(f"unknown model kind {kind!r}; expected captioner, embedder or judge")


def parse_options(backend: type, options: Mapping[str, Any] | None, key: str, origin: str = "config") -> Section:
    """`options` checked against `backend.Options`; the error reads `origin: KEY.options.NAME: ...`."""
    return parse_section(backend.Options, dict(options or {}), f"{key}.options" if key else "options", origin)


def validate_model_options(kind: ModelKind, ref, key: str, origin: str = "config") -> Section:
    """Check one model reference of the config without loading anything: its backend is registered
    and its options are that backend's. `key` is where it sits (`models.judges[1]`); returns the
    parsed options. Raises ConfigError naming `origin` and the key."""
    backend_name = ref["backend"] if isinstance(ref, Mapping) else ref.backend
    options = ref.get("options") if isinstance(ref, Mapping) else ref.options
    try:
        backend = model_registry(kind).get(backend_name)
    except RegistryError as exc:
        raise ConfigError(f"{origin}: {key}.backend: {exc}") from None
    return parse_options(backend, options, key, origin)


def validate_models(models, origin: str = "config", prefix: str = "models") -> None:
    """Every model reference of a `models:` section (`ModelsConfig`), each error naming its key."""
    if models.captioner is not None:
        validate_model_options("captioner", models.captioner, f"{prefix}.captioner", origin)
    if models.embedder is not None:
        validate_model_options("embedder", models.embedder, f"{prefix}.embedder", origin)
    for i, ref in enumerate(models.judges):
        validate_model_options("judge", ref, f"{prefix}.judges[{i}]", origin)


__all__ = ["ConfigError", "ModelKind", "model_registry", "parse_options", "validate_model_options", "validate_models"]
