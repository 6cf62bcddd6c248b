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
