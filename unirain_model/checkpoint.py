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
import re
import warnings
from dataclasses import dataclass
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
    for key in ("checkpoint", "state"):  # plain names in this folder: latest.json cannot point elsewhere
        name = latest[key]
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            raise CheckpointError(f"{path}: {key} {name!r} is not a file name in {path.parent}")
    return latest


STATE_KEYS = ("optimizer", "scheduler", "reweighter", "weights", "rng", "iteration", "types")


def load_state(path: str | Path) -> dict[str, Any]:
    """A training-state file, checked: a truncated, corrupt or foreign file is a CheckpointError
    naming it (never a PyTorch traceback)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for damaged files
        raise CheckpointError(f"{path}: unreadable training state ({_first_line(exc)})") from None
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a UniRain training state (lacks {', '.join(missing)})")
    return state


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a weights file; a truncated or corrupt file is a CheckpointError naming it."""
    try:
        return load_file(str(path), device="cpu")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: unreadable weights ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


@dataclass
class Resume:
    """An intact checkpoint to resume from: both files read and checked."""
    weights_path: Path
    state_path: Path
    meta: dict[str, Any]
    weights: dict[str, torch.Tensor]
    state: dict[str, Any]


_ITER = re.compile(r"iter_(\d+)\.safetensors")


def _candidates(folder: Path) -> list[tuple[Path, Path]]:
    """(weights, state) pairs to try, best first: latest.json's, then older ones, newest first. An
    unreadable latest.json is warned about and every checkpoint in the folder is a candidate."""
    try:
        latest = read_latest(folder)
    except CheckpointError as exc:
        warnings.warn(f"{exc}; looking for the newest intact checkpoint instead", stacklevel=3)
        latest = {"iteration": None}
    if latest is None:
        return []
    found = sorted(((int(m.group(1)), p) for p in folder.glob("iter_*.safetensors")
                    if (m := _ITER.fullmatch(p.name))), reverse=True)
    pairs = []
    if latest.get("checkpoint"):
        pairs.append((folder / latest["checkpoint"], folder / latest["state"]))
    for it, weights in found:
        if latest["iteration"] is None or it < int(latest["iteration"]):
            pairs.append((weights, weights.with_name(weights.name[: -len(".safetensors")] + ".state.pt")))
    return pairs


def load_resume(folder: str | Path) -> Resume | None:
    """The newest intact checkpoint of a checkpoints folder, or None when there is none to resume
    (no latest.json). A damaged checkpoint (truncated or corrupt weights or state) is skipped with a
    warning naming the bad file; when every one is damaged, a CheckpointError names them all."""
    folder = Path(folder)
    pairs = _candidates(folder)
    if not pairs:
        return None
    bad = []
    for weights_path, state_path in pairs:
        try:
            meta = read_metadata(weights_path)
            weights = load_weights(weights_path)
            state = load_state(state_path)
        except CheckpointError as exc:
            bad.append(str(exc))
            continue
        if bad:
            warnings.warn(f"resuming from {weights_path.name} (iteration {meta['iteration']}), the newest intact "
                          f"checkpoint; skipped: {'; '.join(bad)}", stacklevel=2)
        return Resume(weights_path, state_path, meta, weights, state)
    raise CheckpointError(f"{folder}: no intact checkpoint to resume from ({'; '.join(bad)}); restore one, or "
                          f"remove {folder} to start training afresh")


def check_resumable(folder: str | Path) -> None:
    """Raise the CheckpointError `load_resume` would, without its warnings: a command calls this
    before starting a flow, so an unusable run is refused in one line; training itself warns."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_resume(folder)


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
    try:
        return {"model_config": json.loads(meta["model_config"]), "iteration": int(meta["iteration"]),
                "types": json.loads(meta.get("types", "[]"))}
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: damaged checkpoint metadata ({_first_line(exc)})") from None


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the architecture named in the checkpoint and load its weights (eval mode)."""
    from unirain_model.archs import build_model

    weights = resolve_weights(path)
    meta = read_metadata(weights)
    model = build_model(meta["model_config"])
    try:
        model.load_state_dict(load_weights(weights))
    except RuntimeError as exc:  # tensors that do not fit the architecture its metadata names
        raise CheckpointError(f"{weights}: weights do not match its model config ({_first_line(exc)})") from None
    return model.to(device).eval(), {**meta, "path": str(weights)}
