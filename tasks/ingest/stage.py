"""Ingest: list sources through adapters, hash and probe every file, write candidates and gallery.

Pure functions and `IngestStage`; the runner (`tasks.stage`) and its generic flow run it. Each file is read once: its bytes
give the content id, the header gives the size, the file's end shows truncation. Nothing is
decoded, except a thumbnail when a pair's rain type must be inferred.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from data_manifests import (
    FINGERPRINT_KEY, RunLayout, bytes_digest, get_schema, pair_id, relative_to_root, shard_name, shard_of,
    write_shard,
)
from data_manifests.reader import read_manifest

from tasks.ingest.adapters import PairListing, get_adapter
from tasks.ingest.adapters.base import image_files
from tasks.config import IngestConfig
from tasks.imageio import ImageInfo, ImageRejected, mean_luminance, probe_image_bytes, read_file_bytes
from tasks.pipeline import spec as spec_of
from tasks.ingest.sources import SourceSpec, parse_gallery, parse_sources
from tasks.stage import Stage, read_state

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
    data = read_file_bytes(path)  # ImageRejected: unreadable (dangling/looping link, ...) or not_a_file (FIFO, ...)
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
        if item.rainy_path is None:  # a clean file no rainy file pairs with
            path = str(item.clean_path)
            rejects.append(reject(path_item_id(item.clean_path), "missing_rainy", "no rainy twin for this clean file", source, path))
            continue
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


def listing_signature(sources: list[SourceSpec], listings: dict[str, list[PairListing]],
                      gallery: dict[str, tuple[Path, list[Path]]]) -> str:
    """Changes when the inputs could change the output: specs, files (relative to their source's
    root, so a moved copy with its mtimes kept is the same input), their sizes and mtimes.
    Plain strings and one stat per file: this runs on every rerun (thousands of files per second)."""
    h = hashlib.blake2b(digest_size=16)

    def entry(path, root: str) -> str:
        if path is None:
            return "None|-1|-1"
        text = str(path)
        rel = text[len(root):] if text.startswith(root) else relative_to_root(text, root.rstrip(os.sep))
        try:
            st = os.stat(text)
        except OSError:  # missing or a dangling link: listed (and rejected at probing), not fatal
            return f"{rel}|-1|-1"
        return f"{rel}|{st.st_size}|{st.st_mtime_ns}"

    for spec in sources:
        h.update(f"{spec.name}|{spec.adapter}|{spec.rain_type}".encode())
        root = str(spec.path).rstrip(os.sep) + os.sep
        for item in listings[spec.name]:
            h.update(f"{entry(item.rainy_path, root)}|{entry(item.clean_path, root)}|{item.rain_type}".encode())
    for name, (folder, paths) in sorted(gallery.items()):
        h.update(f"gallery|{name}".encode())
        root = str(folder).rstrip(os.sep) + os.sep
        for p in paths:
            h.update(entry(p, root).encode())
    return h.hexdigest()


OUTPUTS = (("candidates", "part"), ("gallery", "part"), ("rejects", "part-ingest"))


def gallery_sources(folders: list[Path]) -> dict[str, Path]:
    """Gallery folders by source name (the folder's name); two folders of one name are refused."""
    out: dict[str, Path] = {}
    for folder in folders:
        if folder.name in out and out[folder.name] != folder:
            raise ValueError(f"gallery folders {out[folder.name]} and {folder} share the name {folder.name!r}: "
                             "the folder name is the gallery's source name, rename one")
        out[folder.name] = folder
    return out


def relative_rows(rows: list[dict], roots: dict[str, Path], columns: tuple[str, ...]) -> list[dict]:
    """Manifest rows with paths relative to their source's root (run.json maps sources to roots)."""
    return [{**row, **{c: relative_to_root(row[c], roots[row["source"]]) for c in columns}} for row in rows]


def publish(run: RunLayout, candidates: list[dict], gallery: list[dict], rejects: list[dict], fingerprint: str,
            num_shards: int) -> dict:
    """Write every shard of the three outputs (empty ones included), rejects first, candidates last:
    a crash leaves shards without the new fingerprint, which the next run redoes."""
    frames = {
        "rejects": pd.DataFrame(rejects, columns=get_schema("rejects").columns),
        "gallery": pd.DataFrame(gallery, columns=get_schema("gallery").columns),
        "candidates": pd.DataFrame(candidates, columns=get_schema("candidates").columns),
    }
    meta = {FINGERPRINT_KEY: fingerprint.encode()}
    for stage, prefix in (OUTPUTS[2], OUTPUTS[1], OUTPUTS[0]):
        schema = get_schema(stage)
        frame = frames[stage]
        folder = run.manifest(stage)
        shard = frame[schema.key].map(lambda i: shard_of(i, num_shards)) if len(frame) else pd.Series([], dtype=int)
        for index in range(num_shards):
            write_shard(frame[shard == index], folder, shard_name(index, prefix), schema, metadata=meta)
    return {"candidates": len(candidates), "gallery": len(gallery), "rejects": len(rejects)}


def read_candidates(run: RunLayout) -> pd.DataFrame:
    return read_manifest(run.manifest("candidates"), "candidates")


class IngestStage(Stage):
    """List, hash and probe every source pair and gallery image; global (duplicates are found
    across sources), so it is redone whole or skipped whole. Its fingerprint covers the listing
    (relative paths, sizes, mtimes) and the probe settings."""

    spec = spec_of("ingest")
    upstream = ()
    CODE_VERSION = 2  # 2: paths relative to source roots
    sharded = False

    def __init__(self, cfg, num_shards: int):
        super().__init__(cfg, num_shards)
        self._listed = None

    def _listing(self):
        if self._listed is None:
            specs = parse_sources(self.cfg.sources)
            galleries = gallery_sources(parse_gallery(self.cfg.gallery))
            clash = sorted(set(galleries) & {s.name for s in specs})
            if clash:
                raise ValueError(f"source name(s) {clash} name both a paired source and a gallery folder: rename one")
            listings = {s.name: list_source(s) for s in specs}
            gallery = {name: (folder, list_gallery(folder)) for name, folder in galleries.items()}
            self._listed = (specs, listings, gallery)
        return self._listed

    def config_section(self) -> dict:
        specs, listings, gallery = self._listing()
        return {"ingest.min_side": self.cfg.ingest.min_side, "ingest.max_pixels": self.cfg.ingest.max_pixels,
                "sources": [s.name for s in specs], "gallery": sorted(gallery),
                "files (relative paths, sizes, mtimes)": listing_signature(specs, listings, gallery)}

    def shard_paths(self, run: RunLayout, shard: int):
        return [(run.manifest(stage) / shard_name(shard, prefix), get_schema(stage)) for stage, prefix in OUTPUTS]

    def roots(self) -> dict[str, Path]:
        specs, _, gallery = self._listing()
        return {**{s.name: s.path for s in specs}, **{name: folder for name, (folder, _) in gallery.items()}}

    def process_all(self, run: RunLayout, fingerprint: str, submit) -> dict:
        specs, listings, gallery = self._listing()
        cfg = self.cfg.ingest
        futures = []
        for s in specs:
            for chunk in chunked(listings[s.name], cfg.chunk_size):
                futures.append(("pairs", submit(probe_pairs, source=s.name, listings=chunk, cfg=cfg)))
        for name, (_, paths) in gallery.items():
            for chunk in chunked(paths, cfg.chunk_size):
                futures.append(("gallery", submit(probe_gallery, source=name, paths=chunk, cfg=cfg)))
        candidates, images, rejects = [], [], []
        for kind, future in futures:
            rows, bad = future.result()
            (candidates if kind == "pairs" else images).extend(rows)
            rejects.extend(bad)
        candidates = drop_duplicates(candidates, "pair_id", rejects, "pair")
        images = drop_duplicates(images, "image_id", rejects, "image")
        roots = self.roots()
        candidates = relative_rows(candidates, roots, ("rainy_path", "clean_path"))
        images = relative_rows(images, roots, ("path",))
        return publish(run, candidates, images, rejects, fingerprint, self.num_shards)

    def finish(self, run: RunLayout, redone: list[int], totals: dict) -> dict:
        run.set_roots(self.roots())  # also when skipped: the config may name a moved copy of the data
        if redone:
            return {}
        last = (read_state(run, self.name) or {}).get("last") or {}
        return {k: last[k] for k in ("candidates", "gallery", "rejects") if k in last}
