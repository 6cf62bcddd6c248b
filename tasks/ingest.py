"""Ingest: list sources through adapters, hash and probe every file, write candidates and gallery.

Pure functions; `flows/ingest.py` wires them as Prefect tasks. Each file is read once: its bytes
give the content id, the header gives the size, the file's end shows truncation. Nothing is
decoded, except a thumbnail when a pair's rain type must be inferred.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from data_manifests import RunLayout, bytes_digest, get_schema, pair_id, shard_complete, shard_name, shard_of, write_shard
from data_manifests.reader import read_manifest, shard_files

from .adapters import PairListing, get_adapter
from .adapters.base import image_files
from .config import IngestConfig
from .imageio import ImageInfo, ImageRejected, mean_luminance, probe_image_bytes
from .sources import SourceSpec

STAGE = "ingest"
NIGHT_LUMA = 0.22  # mean luma under this reads as a night scene (synthetic night sets sit ~0.1)


@dataclass(frozen=True)
class Probed:
    digest: str
    info: ImageInfo
    data: bytes


def reject(item_id: str, reason: str, detail: str, source: str | None, path: str | None) -> dict:
    return {"item_id": item_id, "stage": STAGE, "reason": reason, "detail": detail, "source": source, "path": path}


def path_item_id(path: Path) -> str:
    """The id of a file that could not be read: its path, since there are no bytes to hash."""
    return bytes_digest(f"path:{path}".encode())


def probe_file(path: Path, cfg: IngestConfig) -> Probed:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageRejected("unreadable", f"cannot read: {exc.strerror or exc}") from None
    digest = bytes_digest(data)
    try:
        info = probe_image_bytes(data, cfg.min_side, cfg.max_pixels)
    except ImageRejected as exc:
        exc.item_id = digest
        raise
    return Probed(digest, info, data)


def infer_rain_type(clean: Probed) -> str:
    """Day or night from the clean image's luminance; streaks unless the dataset says otherwise."""
    try:
        luma = mean_luminance(clean.data)
    except Exception:  # undecodable pixels: the pair is still usable as far as ingest knows
        return "day_streak"
    return "night_streak" if luma < NIGHT_LUMA else "day_streak"


def probe_pairs(source: str, listings: list[PairListing], cfg: IngestConfig) -> tuple[list[dict], list[dict]]:
    """Rows for the candidates manifest and rejects for one chunk of listings."""
    rows, rejects = [], []
    clean_cache: dict[Path, Probed | ImageRejected] = {}  # many rainy files may share one clean file
    for item in listings:
        rainy_path = str(item.rainy_path)
        try:
            rainy = probe_file(item.rainy_path, cfg)
        except ImageRejected as exc:
            item_id = getattr(exc, "item_id", None) or path_item_id(item.rainy_path)
            rejects.append(reject(item_id, exc.reason, f"rainy: {exc.detail}", source, rainy_path))
            continue
        if item.clean_path is None:
            rejects.append(reject(rainy.digest, "missing_clean", "no clean twin for this rainy file", source, rainy_path))
            continue
        if item.clean_path not in clean_cache:
            try:
                clean_cache[item.clean_path] = probe_file(item.clean_path, cfg)
            except ImageRejected as exc:
                clean_cache[item.clean_path] = exc
        clean = clean_cache[item.clean_path]
        if isinstance(clean, ImageRejected):
            detail = f"clean {item.clean_path}: {clean.detail}"
            rejects.append(reject(rainy.digest, clean.reason, detail, source, rainy_path))
            continue
        pid = pair_id(rainy.digest, clean.digest)
        if (rainy.info.width, rainy.info.height) != (clean.info.width, clean.info.height):
            detail = f"rainy {rainy.info.width}x{rainy.info.height} vs clean {clean.info.width}x{clean.info.height}"
            rejects.append(reject(pid, "size_mismatch", detail, source, rainy_path))
            continue
        rain_type = item.rain_type or infer_rain_type(clean)
        rows.append({
            "pair_id": pid, "source": source, "rain_type": rain_type,
            "rainy_path": rainy_path, "clean_path": str(item.clean_path),
            "width": rainy.info.width, "height": rainy.info.height,
            "rainy_id": rainy.digest, "clean_id": clean.digest,
            "rain_type_inferred": item.rain_type is None,
        })
    return rows, rejects


def probe_gallery(source: str, paths: list[Path], cfg: IngestConfig) -> tuple[list[dict], list[dict]]:
    rows, rejects = [], []
    for path in paths:
        try:
            img = probe_file(path, cfg)
        except ImageRejected as exc:
            item_id = getattr(exc, "item_id", None) or path_item_id(path)
            rejects.append(reject(item_id, exc.reason, exc.detail, source, str(path)))
            continue
        rows.append({"image_id": img.digest, "source": source, "path": str(path),
                     "width": img.info.width, "height": img.info.height})
    return rows, rejects


def list_source(spec: SourceSpec) -> list[PairListing]:
    adapter = get_adapter(spec.adapter)
    return list(adapter.list_pairs(spec.path, spec.rain_type or adapter.default_type))


def list_gallery(folder: Path) -> list[Path]:
    return image_files(folder, recursive=True)


def chunked(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def drop_duplicates(rows: list[dict], key: str, rejects: list[dict], what: str) -> list[dict]:
    """Keep the first of each id in a stable order (source, path); the rest become rejects."""
    order = "rainy_path" if key == "pair_id" else "path"
    seen: dict[str, dict] = {}
    for row in sorted(rows, key=lambda r: (r["source"], r[order])):
        first = seen.get(row[key])
        if first is None:
            seen[row[key]] = row
        else:
            detail = f"same {what} as {first['source']}:{first[order]}"
            rejects.append(reject(row[key], "duplicate", detail, row["source"], row[order]))
    return list(seen.values())


def write_sharded(rows: list[dict], folder: Path, schema_name: str, num_shards: int, prefix: str = "part") -> None:
    """Write every shard, empty ones included, so a complete stage is recognisable by its files."""
    schema = get_schema(schema_name)
    frame = pd.DataFrame(rows, columns=schema.columns)
    shard = frame[schema.key].map(lambda i: shard_of(i, num_shards)) if len(frame) else pd.Series([], dtype=int)
    for index in range(num_shards):
        write_shard(frame[shard == index], folder, shard_name(index, prefix), schema)


def listing_signature(sources: list[SourceSpec], listings: dict[str, list[PairListing]], gallery: dict[str, list[Path]], cfg: IngestConfig) -> str:
    """Changes when the inputs could change the output: specs, files, their sizes and mtimes, config."""
    h = hashlib.blake2b(digest_size=16)
    h.update(cfg.model_dump_json().encode())
    for spec in sources:
        h.update(f"{spec.name}|{spec.adapter}|{spec.rain_type}|{spec.path}".encode())
        for item in listings[spec.name]:
            for p in (item.rainy_path, item.clean_path):
                st = os.stat(p) if p is not None and p.exists() else None
                h.update(f"{p}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}|{item.rain_type}".encode())
    for name, paths in gallery.items():
        h.update(f"gallery|{name}".encode())
        for p in paths:
            st = os.stat(p)
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


OUTPUTS = (("candidates", "part"), ("gallery", "part"), ("rejects", "part-ingest"))


def marker_path(run: RunLayout) -> Path:
    return run.manifest("candidates") / "_ingest.json"


def ingest_complete(run: RunLayout, signature: str, num_shards: int) -> bool:
    marker = marker_path(run)
    if not marker.is_file() or json.loads(marker.read_text()).get("signature") != signature:
        return False
    return all(
        shard_complete(run.manifest(stage) / shard_name(i, prefix), get_schema(stage))
        for stage, prefix in OUTPUTS for i in range(num_shards)
    )


def publish(run: RunLayout, candidates: list[dict], gallery: list[dict], rejects: list[dict], signature: str, num_shards: int) -> dict:
    """Write all outputs; the marker goes last, so a crash before it means 'not done'."""
    marker_path(run).unlink(missing_ok=True)
    for stage, prefix in OUTPUTS:
        for stale in shard_files(run.manifest(stage), prefix + "-"):
            stale.unlink()  # a different shard count must not leave old shards behind
    write_sharded(candidates, run.manifest("candidates"), "candidates", num_shards)
    write_sharded(gallery, run.manifest("gallery"), "gallery", num_shards)
    write_sharded(rejects, run.rejects, "rejects", num_shards, prefix="part-ingest")
    counts = {"candidates": len(candidates), "gallery": len(gallery), "rejects": len(rejects)}
    marker_path(run).write_text(json.dumps({"signature": signature, "num_shards": num_shards, **counts}))
    return counts


def existing_counts(run: RunLayout) -> dict:
    meta = json.loads(marker_path(run).read_text())
    return {k: meta[k] for k in ("candidates", "gallery", "rejects")}


def read_candidates(run: RunLayout) -> pd.DataFrame:
    return read_manifest(run.manifest("candidates"), "candidates")
