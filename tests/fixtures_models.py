"""Session fixtures with tiny offline models (loaded as a pytest plugin by tests/conftest.py).

- `tiny_models`: built ONCE per session through the `unirain models make-tiny` handler (~20 s);
  a `TinyModels` with `.dir`, `.config_path`, `.config` (a validated RunConfig) and the refs.
- `tiny_captioner`, `tiny_embedder`: the loaded models, built through the same factories as real
  checkpoints (`build_captioner`, `build_embedder`).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class TinyModels:
    dir: Path
    config_path: Path
    config: object  # tasks.config.RunConfig

    @property
    def captioner(self):
        return self.config.models.captioner

    @property
    def embedder(self):
        return self.config.models.embedder

    @property
    def judges(self):
        return self.config.models.judges


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> TinyModels:
    from flows.commands.models import make_tiny
    from tasks.config import load_yaml, parse_run_config

    out = tmp_path_factory.mktemp("tiny_models")
    assert make_tiny(argparse.Namespace(out=str(out), seed=0, base_config=None)) == 0
    config_path = out / "config.yaml"
    return TinyModels(out, config_path, parse_run_config(load_yaml(config_path), str(config_path)))


@pytest.fixture(scope="session")
def tiny_captioner(tiny_models):
    from tasks.caption.backends import build_captioner

    return build_captioner(tiny_models.captioner, tiny_models.config.caption)


@pytest.fixture(scope="session")
def tiny_embedder(tiny_models):
    from tasks.embed.backends import build_embedder

    return build_embedder(tiny_models.embedder, tiny_models.config.embed)
