"""Load a whole run config: every section validated at once, relative paths resolved.

Relative paths in a config (sources, gallery folders, local model folders, `train.model`) are read
from the config file's folder when they exist there, so a config and the data beside it move
together; otherwise they are left to the working directory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.config import ConfigError, RunConfig, load_yaml, parse_run_config


def _resolve(value: str, base: Path) -> str:
    prefix = ""
    if value.startswith("local-dir:"):
        prefix, value = "local-dir:", value[len("local-dir:"):]
    path = Path(value).expanduser()
    if not path.is_absolute() and (base / path).exists():
        return prefix + str((base / path).resolve())
    return prefix + value


def resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    data = dict(data)
    sources = []
    for spec in data.get("sources") or []:
        name, sep, path = str(spec).partition("=")
        sources.append(f"{name}={_resolve(path, base)}" if sep else spec)
    if sources:
        data["sources"] = sources
    if data.get("gallery"):
        data["gallery"] = [_resolve(str(p), base) for p in data["gallery"]]
    models = dict(data.get("models") or {})
    refs = [models.get("captioner"), models.get("embedder"), *(models.get("judges") or [])]
    for ref in refs:
        if isinstance(ref, dict):
            for key in ("name", "pretrained"):
                if isinstance(ref.get(key), str):
                    ref[key] = _resolve(ref[key], base)
    if isinstance(data.get("train"), dict) and isinstance(data["train"].get("model"), str):
        data["train"] = {**data["train"], "model": _resolve(data["train"]["model"], base)}
    return data


def load_run_config(path: str | Path) -> RunConfig:
    from unirain_model.config import ConfigError as ModelConfigError, parse_eval_config, parse_train_config

    path = Path(path)
    data = resolve_paths(load_yaml(path), path.parent.resolve())
    cfg = parse_run_config(data, str(path))
    try:  # the model library's sections fail now too, not hours later when training starts
        parse_train_config(cfg.train, str(path))
        parse_eval_config(cfg.evaluate, str(path))
    except ModelConfigError as exc:
        raise ConfigError(str(exc)) from None
    return cfg
