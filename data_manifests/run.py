"""One run folder and the invariants it owns.

    RUN/run.json                  layout version, shard count, source roots, run id (written at creation)
    RUN/manifests/<manifest>/     Parquet shards only: any Parquet reader reads a folder as is
    RUN/state/<stage>.json        the runner's bookkeeping (fingerprint, generation, counts)
    RUN/indexes/ RUN/cache/ RUN/checkpoints/ RUN/reports/

Every stage of a run must cut its manifests into the same number of shards (they are cut by id
hash, and a stage reads its input shard by shard), so the shard count is a property of the run,
recorded when the run is created; a config that disagrees is refused before any stage runs
(`resolve_num_shards`). Image paths in manifests are relative to their source's root, and
`run.json` maps each source name to its root, so moving a run and its data is one command
(`unirain relocate RUN --root NAME=PATH`, `relocate`).
"""
from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import ManifestError

MARKER = "run.json"
LAYOUT_VERSION = 2  # 2: run.json holds num_shards and roots; manifest paths are relative to roots


class RunError(ManifestError):
    """A run folder that disagrees with what is asked of it; the message says what to do."""


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @classmethod
    def at(cls, path: str | os.PathLike) -> "RunLayout":
        return cls(Path(path).resolve())

    @classmethod
    def of_manifest(cls, folder: str | os.PathLike) -> "RunLayout | None":
        """The run a manifest folder (RUN/manifests/<name>) belongs to, or None outside a run."""
        root = Path(folder).resolve().parent.parent
        layout = cls(root)
        return layout if Path(folder).resolve().parent.name == "manifests" and layout.is_run() else None

    # --- folders ---------------------------------------------------------------------------
    def manifest(self, name: str) -> Path:
        return self.root / "manifests" / name

    @property
    def rejects(self) -> Path:
        return self.manifest("rejects")

    @property
    def state(self) -> Path:
        return self.root / "state"

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

    @property
    def marker(self) -> Path:
        return self.root / MARKER

    def is_run(self) -> bool:
        return self.marker.is_file()

    # --- run.json --------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """run.json, checked: a run of an older layout is refused with what to do."""
        try:
            info = json.loads(self.marker.read_text())
        except FileNotFoundError:
            raise RunError(f"{self.root} is not a UniRain run folder (no {MARKER})") from None
        except (OSError, ValueError) as exc:
            raise RunError(f"{self.marker}: unreadable ({exc}); restore it or start a new run folder") from None
        layout = info.get("layout")
        if layout != LAYOUT_VERSION:
            raise RunError(
                f"{self.marker}: run layout {layout} was written by another UniRain version (this one reads layout "
                f"{LAYOUT_VERSION}: relative image paths, shard count and source roots in run.json); start a new "
                f"run folder (its manifests are still readable with absolute paths)")
        return info

    def _write_info(self, info: dict[str, Any]) -> None:
        tmp = self.root / f".{MARKER}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(info, indent=1, sort_keys=True))
        os.replace(tmp, self.marker)

    def create(self, num_shards: int | None = None) -> "RunLayout":
        """Make the folders; a new run records `num_shards` (the only time it is written)."""
        for folder in (self.root / "manifests", self.state, self.indexes, self.cache, self.checkpoints, self.reports):
            folder.mkdir(parents=True, exist_ok=True)
        if not self.marker.exists():
            self._write_info({"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "layout": LAYOUT_VERSION, "num_shards": num_shards, "roots": {},
                              "run_id": uuid.uuid4().hex})
        elif num_shards is not None and self.info().get("num_shards") is None:
            self._write_info({**self.info(), "num_shards": num_shards})
        try:
            info = self.info()
        except RunError:
            return self  # another layout: refused, with what to do, where it is read
        if info.get("run_id") is None:  # a run created before run ids existed gets one now
            self._write_info({**info, "run_id": uuid.uuid4().hex})
        return self

    @property
    def run_id(self) -> str | None:
        """A unique id of this run, made at creation (Prefect artifact keys derive from it, so two runs
        with the same folder name do not share artifacts); None outside a run folder."""
        return self.info().get("run_id") if self.is_run() else None

    @property
    def num_shards(self) -> int | None:
        return self.info().get("num_shards") if self.is_run() else None

    def resolve_num_shards(self, configured: int, explicit: bool, origin: str = "the config") -> int:
        """The run's shard count. A run that has one keeps it: a config that sets another
        (`explicit`) is refused, one that leaves it unset adopts it. A new run takes `configured`."""
        recorded = self.num_shards
        if recorded is None:
            return configured
        if explicit and configured != recorded:
            raise RunError(
                f"{self.root} is cut into {recorded} shards (ingest.num_shards, fixed when the run was created), "
                f"but {origin} sets ingest.num_shards: {configured}. Set ingest.num_shards: {recorded} (or remove "
                f"it) to continue this run, or use a new run folder to shard differently.")
        return recorded

    # --- source roots ----------------------------------------------------------------------
    def roots(self) -> dict[str, str]:
        return dict(self.info().get("roots") or {}) if self.is_run() else {}

    def set_roots(self, roots: dict[str, str | os.PathLike]) -> None:
        """Record (or move) the roots of sources; other sources keep theirs."""
        info = self.info()
        info["roots"] = {**(info.get("roots") or {}), **{k: str(Path(v).resolve()) for k, v in roots.items()}}
        self._write_info(info)

    def relocate(self, roots: dict[str, str | os.PathLike]) -> dict[str, tuple[str | None, str]]:
        """Point known sources at new roots (a moved run or moved data); returns {name: (old, new)}.
        Unknown names and missing folders are refused, naming them."""
        known = self.roots()
        unknown = sorted(set(roots) - set(known))
        if unknown:
            raise RunError(f"{self.marker}: no source named {', '.join(map(repr, unknown))}; "
                           f"this run's sources: {', '.join(sorted(known)) or '(none)'}")
        missing = {k: str(Path(v).resolve()) for k, v in roots.items() if not Path(v).is_dir()}
        if missing:
            raise RunError("root folder(s) not found: " + ", ".join(f"{k}={v}" for k, v in missing.items()))
        self.set_roots(roots)
        return {k: (known.get(k), str(Path(v).resolve())) for k, v in roots.items()}

    def absolute_paths(self, frame: pd.DataFrame, columns: tuple[str, ...] | list[str],
                       source_column: str = "source", check: bool = True) -> pd.DataFrame:
        """`frame` with its relative path `columns` joined to their source's root (absolute paths,
        as in manifests of older runs, are kept). `check`: a source without a root, or whose root
        folder is gone, is an error naming the source and the fix."""
        if frame.empty:
            return frame
        roots = self.roots()
        out = frame.copy()
        for source in out[source_column].unique():
            root = roots.get(source)
            mask = out[source_column] == source
            relative = ~out.loc[mask, columns[0]].map(os.path.isabs)
            if not relative.any():
                continue
            if root is None:
                if check:
                    raise RunError(f"source {source!r} has no root in {self.marker}: run "
                                   f"`unirain relocate {self.root} --root {source}=PATH` with its folder")
                continue
            if check and not os.path.isdir(root):
                raise RunError(f"the root of source {source!r} is missing: {root} (from {self.marker}); if the data "
                               f"moved, run `unirain relocate {self.root} --root {source}=NEW_PATH`")
            prefix = root.rstrip(os.sep) + os.sep
            for column in columns:
                values = out.loc[mask, column]
                out.loc[mask, column] = values.where(values.map(os.path.isabs), prefix + values)
        return out


def absolute_paths(frame: pd.DataFrame, manifest_folder: str | os.PathLike, columns=None) -> pd.DataFrame:
    """Readers outside the pipeline (the training data loader): a manifest frame with absolute image
    paths, resolved through the run the folder belongs to. Outside a run, paths are kept as they are."""
    from .schemas import PATH_COLUMNS

    run = RunLayout.of_manifest(manifest_folder)
    if run is None:
        return frame
    if columns is None:
        columns = next((cols for cols in PATH_COLUMNS.values() if all(c in frame.columns for c in cols)), ())
    return run.absolute_paths(frame, tuple(columns)) if columns else frame


def relative_to_root(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """A file's path under its source root, as manifests store it (POSIX separators)."""
    return Path(os.path.relpath(Path(path), Path(root))).as_posix()
