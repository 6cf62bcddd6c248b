"""What every config section of the project shares: the base model, the error, its wording, paths.

A bad config fails at load time with the dotted key in the message (`retrieval.k_visual: ...`).
Relative paths in a config are always read from the config file's folder (never the working
directory), and an error names the resolved path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key (and the path, for paths)."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        lines.append(f"{key or '(top level)'}: {err['msg']}")
    return "; ".join(lines)


def parse_section(cls: type[Section], data: dict[str, Any] | None, prefix: str, origin: str = "config"):
    """Validate one section; the error names `origin: prefix.key: message`."""
    try:
        return cls.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {format_validation_error(exc, prefix)}") from None


def resolve_path(value: str, base: Path) -> str:
    """A config path read from `base` (the config's folder); absolute paths and hub names are kept.

    `local-dir:` prefixes (open_clip) are kept. A relative value is always joined to `base`: callers
    check existence themselves and name the resolved path in their error.
    """
    prefix = ""
    if value.startswith("local-dir:"):
        prefix, value = "local-dir:", value[len("local-dir:"):]
    path = Path(value).expanduser()
    if path.is_absolute():
        return prefix + str(path)
    return prefix + str((base / path).resolve())


def load_yaml(path: str | Path) -> dict[str, Any]:
    """One config file's raw mapping; a missing file, bad YAML or a non-mapping is a ConfigError."""
    import yaml

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


def config_chain(path: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """A config file and the files it `extends:`, the root first: `[(file, its own keys), ...]`.

    `extends: ../paper.yaml` is read from the extending file's folder. Every reader of a run config
    (the pipeline's, the trainer's, the evaluator's) walks this one chain, so none sees a different
    config; each resolves its own relative paths from the folder of the file that set them.
    """
    chain: list[tuple[Path, dict[str, Any]]] = []
    path = Path(path)
    while True:
        data = load_yaml(path)
        parent = data.pop("extends", None)
        chain.insert(0, (path, data))
        if parent is None:
            return chain
        if not isinstance(parent, str) or not parent:
            raise ConfigError(f"{path}: extends: must be the path of another config file")
        base = (path.parent / parent).expanduser().resolve()
        seen = [p.resolve() for p, _ in chain]
        if base in seen:
            raise ConfigError(f"{path}: extends: {parent} makes a loop "
                              f"({' -> '.join(str(p) for p in (*reversed(seen), base))})")
        if not base.is_file():
            raise ConfigError(f"{path}: extends: config file not found: {base} (read from this file's folder)")
        path = base


def merge_config(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`: mappings merge key by key, anything else (lists included) replaces, and so
    does a model (a mapping with `backend:` or `type:`): another model's `pretrained` or `options` must
    not leak in."""
    out = dict(base)
    for key, value in over.items():
        merge = (isinstance(value, dict) and isinstance(out.get(key), dict)
                 and "backend" not in value and "type" not in value)
        out[key] = merge_config(out[key], value) if merge else value
    return out
