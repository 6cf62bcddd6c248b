"""The kind of a local model folder, judged from its config files without loading any weight: a
captioner pointed at a LLaVA judge (or a judge at a BLIP captioner) is refused before any stage runs,
instead of loading with random weights and producing gibberish."""
from __future__ import annotations

import json
from pathlib import Path

from data_manifests.config_base import ConfigError


def folder_kind(path: Path) -> tuple[str, list[str]] | None:
    """(model_type, architectures) from a Hugging Face config.json; None when there is none."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return None
    try:
        data = json.loads(cfg.read_text())
    except (OSError, ValueError):
        return ("(unreadable config.json)", [])
    return str(data.get("model_type") or "(none)"), [str(a) for a in data.get("architectures") or []]


def describe(path: Path) -> str:
    kind = folder_kind(path)
    if kind is None:
        files = sorted(p.name for p in Path(path).iterdir())[:6] if Path(path).is_dir() else []
        return f"no config.json (holds {', '.join(files) or 'nothing'})"
    model_type, archs = kind
    return f"model_type {model_type!r}" + (f" ({', '.join(archs)})" if archs else "")


def require_kind(path: Path, key: str, what: str, accepts) -> None:
    """Raise ConfigError naming `key` and `path` unless `accepts(path)` says the folder is a `what`."""
    if Path(path).is_dir() and not accepts(Path(path)):
        raise ConfigError(f"{key}: {path} is not {_a(what)}: it has {describe(path)}")


def is_blip_captioner(path: Path) -> bool:
    kind = folder_kind(path)
    return kind is not None and kind[0] == "blip"


def is_vision_language_judge(path: Path) -> bool:
    """An image-text-to-text model that can answer yes/no (LLaVA, Qwen2-VL, ...); captioners are not."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    kind = folder_kind(path)
    return kind is not None and kind[0] in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES and kind[0] not in CAPTIONER_TYPES


CAPTIONER_TYPES = frozenset({"blip", "git", "pix2struct", "vision-encoder-decoder"})


def is_open_clip_folder(path: Path) -> bool:
    return (Path(path) / "open_clip_config.json").is_file()


def _a(what: str) -> str:
    return ("an " if what[:1].lower() in "aeiou" else "a ") + what
