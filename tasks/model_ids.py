"""Stable model identifiers for manifests and index sidecars, a load-error type, device choice.

A hub name or pretrained tag is its own id. A local folder or file is identified by its name plus a
fingerprint of its contents (config bytes, weight file sizes, first and last MiB of each weight
file), so two different local models never share an id, and the same model copied to another
machine or path keeps its id. Hashing a whole multi-GB checkpoint at every start would cost
seconds for no practical gain.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_CONFIG_NAMES = ("config.json", "open_clip_config.json", "generation_config.json", "tokenizer.json", "vocab.txt")
_CHUNK = 1 << 20


def pick_device(requested: str | None = None) -> str:
    """`cuda` when available unless a device is named (`options.device` of a ModelRef)."""
    import torch

    if requested and requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


class ModelLoadError(RuntimeError):
    """A model named in the config cannot be loaded; the message names the key, the model and the fix."""


def _fingerprint_file(h, path: Path) -> None:
    size = path.stat().st_size
    h.update(f"{path.name}:{size}".encode())
    with path.open("rb") as f:
        h.update(f.read(_CHUNK))
        if size > 2 * _CHUNK:
            f.seek(size - _CHUNK)
            h.update(f.read(_CHUNK))


def fingerprint(path: str | Path) -> str:
    """12 hex digits identifying a local model folder or checkpoint file by content."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_file():
        _fingerprint_file(h, path)
    else:
        for child in sorted(path.iterdir()):
            if child.name in _CONFIG_NAMES:
                h.update(child.name.encode())
                h.update(child.read_bytes())
            elif child.suffix in _WEIGHT_SUFFIXES:
                _fingerprint_file(h, child)
    return h.hexdigest()[:12]


def local_model_id(backend: str, path: str | Path, prefix: str = "") -> str:
    path = Path(path)
    return f"{backend}:{prefix}{path.name}@{fingerprint(path)}"
