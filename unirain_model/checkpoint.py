"""Derainer checkpoints: safetensors weights that describe themselves, plus a training-state file.

    RUN/checkpoints/iter_00001000.safetensors   weights; metadata: model config, iteration, rain types
    RUN/checkpoints/iter_00001000.state.pt      optimizer, scheduler, scaler, RNG, reweighter, iteration
    RUN/checkpoints/latest.json                 {"checkpoint": ..., "state": ..., "iteration": N}

The state file holds only tensors, numbers, strings, lists and dicts, so it loads with
`torch.load(weights_only=True)` (no pickle code runs). Every file is written under a temporary name
and renamed; `latest.json` is replaced last, so a crash at any moment leaves the previous checkpoint
usable. Evaluation and inference need only the `.safetensors` file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

FORMAT = "unirain-derainer-1"
LATEST = "latest.json"


class CheckpointError(ValueError):
    pass


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def save_checkpoint(folder: str | Path, model: torch.nn.Module, model_config: dict[str, Any], iteration: int,
                    types: list[str], state: dict[str, Any], keep: int = 3) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"iter_{iteration:08d}"
    weights_path, state_path = folder / f"{stem}.safetensors", folder / f"{stem}.state.pt"
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "model_config": json.dumps(model_config), "iteration": str(iteration),
            "types": json.dumps(list(types))}
    _atomic(weights_path, lambda p: save_file(tensors, str(p), metadata=meta))
    _atomic(state_path, lambda p: torch.save({**state, "iteration": iteration}, p))
    latest = {"checkpoint": weights_path.name, "state": state_path.name, "iteration": iteration}
    _atomic(folder / LATEST, lambda p: p.write_text(json.dumps(latest, indent=1)))
    _prune(folder, keep)
    return weights_path


def _prune(folder: Path, keep: int) -> None:
    stems = sorted(p.name[: -len(".safetensors")] for p in folder.glob("iter_*.safetensors"))
    for stem in stems[:-keep]:
        for suffix in (".safetensors", ".state.pt"):
            (folder / f"{stem}{suffix}").unlink(missing_ok=True)


def read_latest(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / LATEST
    if not path.is_file():
        return None
    try:
        latest = json.loads(path.read_text())
        int(latest["iteration"]), latest["checkpoint"], latest["state"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc}); remove it to start training afresh") from None
    return latest


def load_state(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def resolve_weights(path: str | Path) -> Path:
    """A weights file from a .safetensors path, a checkpoints folder or a run folder (newest)."""
    path = Path(path)
    if path.is_file():
        return path
    for folder in (path, path / "checkpoints"):
        latest = read_latest(folder) if folder.is_dir() else None
        if latest:
            return folder / latest["checkpoint"]
    raise CheckpointError(f"no checkpoint at {path} (expected a .safetensors file, or a folder with {LATEST})")


def read_metadata(path: str | Path) -> dict[str, Any]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({exc})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a UniRain derainer checkpoint (format {meta.get('format')!r})")
    return {"model_config": json.loads(meta["model_config"]), "iteration": int(meta["iteration"]),
            "types": json.loads(meta.get("types", "[]"))}


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the architecture named in the checkpoint and load its weights (eval mode)."""
    from unirain_model.archs import build_model

    weights = resolve_weights(path)
    meta = read_metadata(weights)
    model = build_model(meta["model_config"])
    model.load_state_dict(load_file(str(weights), device="cpu"))
    return model.to(device).eval(), {**meta, "path": str(weights)}
