"""Tiny random-weight models of the real architectures, for the demo and the tests.

Each maker builds one model kind inside `out_dir`, saves it with the library's own saver, and
returns what the run config needs to load it (a `ModelRef`, or a list of them for the judges).
The files load back through exactly the same code as real checkpoints (`local-dir:` for
open_clip, `from_pretrained(folder)` for transformers). Their outputs are meaningless.

Makers register themselves with `@TINY_MODELS.register("name")` in a submodule of this package; the
registry imports every submodule on first look-up, so adding a model kind is one new file.
Known names and where their result goes in the run config:
`clip` -> `models.embedder`, `blip` -> `models.captioner`, `llava` -> `models.judges` (a list).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import yaml

from data_manifests.registry import Registry, package_modules

# name -> maker(out_dir: Path, seed: int) -> ModelRef | list[ModelRef]
TINY_MODELS: Registry[Callable[[Path, int], Any]] = Registry("tiny model", lazy_modules=package_modules(__name__))

# The demo's settings: small shards and batches so a CPU laptop finishes in minutes.
DEMO_SETTINGS: dict[str, Any] = {
    "ingest": {"num_shards": 2, "min_side": 32, "chunk_size": 64},
    "caption": {"batch_size": 4, "num_workers": 1, "max_new_tokens": 12},
    "embed": {"batch_size": 16, "num_workers": 1},
    "index": {"kind": "flat"},
    "retrieval": {"k_semantic": 8, "k_visual": 4, "ssim_size": 128, "batch_size": 256},
    "vote": {"threshold": 0.5, "cascade": True, "timeout_s": 60.0, "retries": 1, "max_concurrency": 4},
}

# Where each maker's result lands in `models:`.
_MODEL_SLOTS = {"clip": "embedder", "blip": "captioner", "llava": "judges"}


def _as_dict(ref: Any) -> dict[str, Any]:
    if hasattr(ref, "model_dump"):
        return ref.model_dump(exclude_none=True)
    return dict(ref)


def make_tiny_models(out_dir: str | Path, seed: int = 0, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build every registered tiny model under `out_dir` and write `out_dir/config.yaml`.

    `base` (a run-config mapping, e.g. `configs/demo.yaml`) replaces `DEMO_SETTINGS`; its
    `models:` section is overwritten with the tiny models. Returns the config mapping written,
    which `tasks.config.parse_run_config` accepts.
    """
    from tasks.config import parse_run_config

    out = Path(out_dir).resolve()
    config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in (base or DEMO_SETTINGS).items()}
    config.pop("models", None)
    parse_run_config(config, origin="base config")  # a bad base fails before minutes of building
    out.mkdir(parents=True, exist_ok=True)
    made = {name: maker(out, seed) for name, maker in TINY_MODELS.items()}

    models: dict[str, Any] = {"captioner": None, "embedder": None, "judges": []}
    for name, result in made.items():
        slot = _MODEL_SLOTS.get(name)
        if slot is None:
            continue  # a maker the config does not use (yet); its files are still built
        if slot == "judges":
            models[slot] = [_as_dict(r) for r in (result if isinstance(result, (list, tuple)) else [result])]
        else:
            models[slot] = _as_dict(result)
    config["models"] = {k: v for k, v in models.items() if v is not None}
    parse_run_config(config, origin=str(out / "config.yaml"))  # a bad maker result fails here, not later
    header = (
        "# Written by `unirain models make-tiny`: tiny RANDOM-WEIGHT models, meaningless outputs.\n"
        "# For the demo and the tests only; real runs name real checkpoints (configs/paper.yaml).\n"
    )
    (out / "config.yaml").write_text(header + yaml.safe_dump(config, sort_keys=False))
    return config
