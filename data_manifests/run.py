"""The folder layout of one run: RUN/{manifests/<stage>, indexes, cache, checkpoints, reports}."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

MARKER = "run.json"


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @classmethod
    def at(cls, path: str | os.PathLike) -> "RunLayout":
        return cls(Path(path).resolve())

    def manifest(self, stage: str) -> Path:
        return self.root / "manifests" / stage

    @property
    def rejects(self) -> Path:
        return self.manifest("rejects")

    @property
    def indexes(self) -> Path:
        return self.root / "indexes"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def is_run(self) -> bool:
        return (self.root / MARKER).is_file()

    def create(self) -> "RunLayout":
        for folder in (self.root / "manifests", self.indexes, self.cache, self.checkpoints, self.reports):
            folder.mkdir(parents=True, exist_ok=True)
        marker = self.root / MARKER
        if not marker.exists():
            marker.write_text(json.dumps({"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "layout": 1}))
        return self
