"""Models loaded once per process and shared by every shard task that runs there."""
from __future__ import annotations

import threading
from typing import Any, Callable

_LOCK = threading.Lock()
_MODELS: dict[str, Any] = {}


def cached_model(kind: str, ref, cfg, factory: Callable[[Any, Any], Any]):
    """`factory(ref, cfg)` the first time a (kind, ref, cfg) is asked for, the same object afterwards."""
    key = f"{kind}|{ref.model_dump_json()}|{cfg.model_dump_json() if cfg is not None else ''}"
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = factory(ref, cfg)
        return _MODELS[key]
