"""Decode once for all model-free screening: the views an earlier stage made, handed to `sanity`.

`leak_check` decodes every candidate image for its perceptual hash; the sanity checks need the same
decode (both read the image at the reduced size that covers 256 px, `tasks.imageio.load_reduced`).
PNG decoding is most of the cost of both stages, so `leak_check` also keeps each image's
`views.reduce_image` array (uint8 RGB, long side <= 256: ~192 KB an image) in one file per shard,
and the sanity stage makes its `View`s from it (`views.view_from_reduced`: the same arrays as decoding
again) instead of decoding.

Never stale, never a failure:
  - an entry is keyed by ingest's content digest of the file (`rainy_id`/`clean_id`), and the writer
    stores it only when the bytes it decoded have that digest (a file changed since ingest is not
    stored); the folder is named after the view parameters (`VIEWS_KEY`), so changed views never
    read old files;
  - every entry carries a CRC-32 of its pixels and the file ends with its index: a missing,
    truncated or damaged file or entry reads as absent, and the sanity stage decodes as it would
    without any file.
It is a hand-off, not a store: the sanity stage deletes a shard's file once it has read it, so the
disk holds views only between the two stages (a sanity redo later decodes again).

File: b"UNIRAIN-VIEWS-1\\n", the entries' pixels back to back, a JSON index {id: [offset, h, w,
width, height, crc32]}, then the index's offset and length (two little-endian uint64) and the magic.
"""
from __future__ import annotations

import json
import os
import struct
import uuid
import zlib
from pathlib import Path

import numpy as np

from .views import DRAFT_SIDE, MID_SIDE, SMALL_SIDE, TINY_FACTOR, View, view_from_reduced

MAGIC = b"UNIRAIN-VIEWS-1\n"
TRAILER = struct.Struct("<QQ")
VIEWS_VERSION = 1  # bump when `reduce_image` or what the stages derive from it changes
VIEWS_KEY = f"v{VIEWS_VERSION}-draft{DRAFT_SIDE}-mid{MID_SIDE}-small{SMALL_SIDE}-tiny{TINY_FACTOR}"


def cache_root(run) -> Path:
    return run.cache / "views"


def shard_path(run, shard: int) -> Path:
    return cache_root(run) / VIEWS_KEY / f"shard-{shard:05d}.views"


class ViewWriter:
    """Streams entries to a temporary file; `close()` adds the index and renames it into place (a
    crash leaves only a `.tmp-*` file, which no reader opens). Memory: the index only."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f"{self.path.name}.tmp-{uuid.uuid4().hex[:8]}")
        self.f = open(self.tmp, "wb")
        self.f.write(MAGIC)
        self.index: dict[str, list[int]] = {}

    def add(self, image_id: str, mid_rgb: np.ndarray, size: tuple[int, int]) -> None:
        if image_id in self.index:
            return  # a clean image shared by several pairs: once
        pixels = np.ascontiguousarray(mid_rgb, dtype=np.uint8)
        h, w = pixels.shape[:2]
        self.index[image_id] = [self.f.tell(), h, w, int(size[0]), int(size[1]), zlib.crc32(pixels)]
        self.f.write(pixels.data)

    def close(self) -> None:
        index = json.dumps(self.index, separators=(",", ":")).encode()
        at = self.f.tell()
        self.f.write(index)
        self.f.write(TRAILER.pack(at, len(index)) + MAGIC)
        self.f.close()
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.f.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "ViewWriter":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.discard()


class ViewReader:
    """`get(image_id)`: the image's `View` from the file, or None (no file, no entry, damaged)."""

    def __init__(self, path: Path):
        self.index: dict[str, list[int]] = {}
        self.f = None
        self.hits = self.misses = 0
        try:
            f = open(path, "rb")
        except OSError:
            return
        try:
            self.index = self._read_index(f)
            self.f = f
        except (OSError, ValueError, struct.error):  # not ours, truncated, garbled: as if absent
            f.close()

    @staticmethod
    def _read_index(f) -> dict[str, list[int]]:
        size = f.seek(0, os.SEEK_END)
        tail = len(MAGIC) + TRAILER.size
        if size < len(MAGIC) + tail:
            raise ValueError("too short")
        f.seek(0)
        if f.read(len(MAGIC)) != MAGIC:
            raise ValueError("no magic")
        f.seek(size - tail)
        at, length = TRAILER.unpack(f.read(TRAILER.size))
        if f.read(len(MAGIC)) != MAGIC or at + length != size - tail:
            raise ValueError("bad trailer")
        f.seek(at)
        index = json.loads(f.read(length))
        if not isinstance(index, dict):
            raise ValueError("bad index")
        return index

    def get(self, image_id: str) -> View | None:
        entry = self.index.get(image_id) if self.f is not None else None
        view = self._read(entry) if entry is not None else None
        if view is None:
            self.misses += 1
        else:
            self.hits += 1
        return view

    def _read(self, entry) -> View | None:
        try:
            offset, h, w, width, height, crc = entry
            self.f.seek(offset)
            data = self.f.read(h * w * 3)
        except (OSError, ValueError, TypeError):
            return None
        if len(data) != h * w * 3 or zlib.crc32(data) != crc:
            return None
        return view_from_reduced(np.frombuffer(data, np.uint8).reshape(h, w, 3), (width, height))

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None

    def __enter__(self) -> "ViewReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def clean_views(run) -> None:
    """Before leak_check writes: remove view folders of other `VIEWS_KEY`s (another code version's,
    never read) and temporary files a crashed writer left (the stage runs alone at that point)."""
    root = cache_root(run)
    if not root.is_dir():
        return
    for folder in root.iterdir():
        if not folder.is_dir():
            continue
        for f in folder.iterdir():
            if folder.name != VIEWS_KEY or ".tmp-" in f.name:
                f.unlink(missing_ok=True)
        if folder.name != VIEWS_KEY:
            folder.rmdir()
