"""Architecture registry: `type` in a model config names a class registered here.

    cfg = load_model_config("configs/model/unirain.yaml")   # {"type": "unirain", "dim": 48, ...}
    model = build_model(cfg)

Every other key of the config is a constructor keyword; an unknown key is a ValueError naming it.
An unknown `type` or a second class under a taken name is a `RegistryError` (a ValueError) from the
project's one `Registry`.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

import yaml
from torch import nn

from data_manifests.registry import Registry

# Architectures register themselves when their module is imported (the imports at the end).
ARCH_REGISTRY: Registry[type[nn.Module]] = Registry("architecture")
REPO_ROOT = Path(__file__).resolve().parents[2]


def register_arch(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: `@register_arch("unirain")` makes `type: unirain` build that class."""
    return ARCH_REGISTRY.register(name)


def _check_kwargs(cls: type, kwargs: dict[str, Any], arch: str) -> None:
    params = inspect.signature(cls.__init__).parameters
    allowed = [p for p in params if p != "self"]
    for key in kwargs:
        if key not in allowed:
            raise ValueError(f"model config: unknown key {key!r} for architecture {arch!r} "
                             f"(allowed: {', '.join(allowed)})")


def build_model(cfg: dict[str, Any]) -> nn.Module:
    """Build the architecture `cfg["type"]` with the remaining keys as constructor arguments."""
    if not isinstance(cfg, dict):
        raise ValueError(f"model config must be a mapping, got {type(cfg).__name__}")
    if "type" not in cfg:
        raise ValueError("model config: missing key 'type' (one of: " + ", ".join(ARCH_REGISTRY.names()) + ")")
    kwargs = {k: v for k, v in cfg.items() if k != "type"}
    arch = cfg["type"]
    cls = ARCH_REGISTRY.get(arch)
    _check_kwargs(cls, kwargs, arch)
    return cls(**kwargs)


def load_model_config(path: str | Path) -> dict[str, Any]:
    """Read a model config (`configs/model/*.yaml`, a mapping with `type`).

    A run config is accepted too: its `train.model` is either an inline mapping or a path to a model
    yaml (tried as given, relative to the run config's folder, then to the repository root).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model config not found: {path}")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    if "type" in data:
        return data
    model = (data.get("train") or {}).get("model") if isinstance(data.get("train"), dict) else None
    if model is None:
        raise ValueError(f"{path}: neither a model config (no 'type') nor a run config with 'train.model'")
    if isinstance(model, dict):
        if "type" not in model:
            raise ValueError(f"{path}: train.model: missing key 'type'")
        return dict(model)
    if isinstance(model, str):
        ref = Path(model)
        for candidate in (ref, path.parent / ref, REPO_ROOT / ref):
            if candidate.is_file():
                return load_model_config(candidate)
        raise ValueError(f"{path}: train.model: model config not found: {model}")
    raise ValueError(f"{path}: train.model must be a path or a mapping, got {type(model).__name__}")


# Architectures register themselves on import.
from unirain_model.archs import nafnet_arch, unirain_arch  # noqa: E402,F401
