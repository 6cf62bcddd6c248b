"""Parsing `--source` specs: `ADAPTER[.LABEL][:TYPE]=PATH`.

The adapter names the layout; the optional label tells two sources of the same layout apart
(`paired.city:night_streak=/data/city`); the optional type fixes the rain type.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tasks.ingest.adapters import check_layout, get_adapter
from tasks.ingest.adapters.base import check_rain_type

_SPEC = re.compile(r"^(?P<adapter>[A-Za-z0-9_]+)(\.(?P<label>[A-Za-z0-9_\-]+))?(:(?P<type>[a-z_]+))?=(?P<path>.+)$")


@dataclass(frozen=True)
class SourceSpec:
    name: str  # the `source` column: adapter, or adapter.label
    adapter: str
    rain_type: str | None
    path: Path


def parse_source(spec: str) -> SourceSpec:
    match = _SPEC.match(spec.strip())
    if not match:
        raise ValueError(f"bad source {spec!r}: expected ADAPTER[.LABEL][:TYPE]=PATH, e.g. unirain=/data/synth")
    adapter = match["adapter"]
    get_adapter(adapter)  # unknown adapter: fails here, naming it
    check_rain_type(match["type"])
    path = Path(match["path"]).expanduser().resolve()
    if not path.is_dir():
        raise ValueError(f"source {adapter!r}: folder not found: {path}")
    check_layout(adapter, path, match["type"])  # a folder holding no such layout fails here, naming it
    name = f"{adapter}.{match['label']}" if match["label"] else adapter
    return SourceSpec(name, adapter, match["type"], path)


def parse_sources(specs: list[str]) -> list[SourceSpec]:
    parsed = [parse_source(s) for s in specs]
    names = [p.name for p in parsed]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"source name(s) {repeated} given twice: add a label, e.g. paired.a=... paired.b=...")
    return parsed


def parse_gallery(paths: list[str]) -> list[Path]:
    folders = []
    for raw in paths:
        path = Path(raw).expanduser().resolve()
        if not path.is_dir():
            raise ValueError(f"gallery folder not found: {path}")
        folders.append(path)
    return folders
