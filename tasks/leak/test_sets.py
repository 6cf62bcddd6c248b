"""The benchmark test sets a run must not train on: listed by the ingest adapters, hashed once per run.

`leak_check.test_sets: [ADAPTER[.LABEL][:TYPE]=PATH, ...]` names them like `sources:` (same adapters,
same parsing, so a folder in the wrong layout fails at config time naming the layout). Every file a
listing finds is a test image, rainy and clean alike: a training image that copies either is a leak.

`listing(...)` (relative path, size, mtime per file) is what the leak stage's fingerprint hashes, so
changing, adding or touching a test image redoes the check. `LeakIndex` holds the hashes of every
test image at `phash.CROP_BOXES`; it is built once per listing and cached under RUN/cache/leak/.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.imageio import ImageRejected
from tasks.leak.phash import CROP_BOXES, Hashes, hash_variants, load_grey


@dataclass(frozen=True)
class TestImage:
    name: str   # "<test set>:<path relative to its root>", as reject details name it
    path: Path


def list_test_images(specs: list[str]) -> list[TestImage]:
    """Every image file of every test set, in a deterministic order."""
    from tasks.ingest.adapters import get_adapter
    from tasks.ingest.sources import parse_sources

    out: list[TestImage] = []
    for source in parse_sources(specs):
        adapter = get_adapter(source.adapter)
        seen: set[Path] = set()
        for listing in adapter.list_pairs(source.path, source.rain_type or adapter.default_type):
            for path in (listing.rainy_path, listing.clean_path):
                if path is not None and path not in seen:
                    seen.add(path)
                    out.append(TestImage(f"{source.name}:{path.relative_to(source.path).as_posix()}", path))
    return out


def listing(images: list[TestImage]) -> list[tuple[str, int, int]]:
    """(name, size, mtime_ns) per test image: what the stage fingerprint hashes."""
    rows = []
    for image in images:
        try:
            st = image.path.stat()
            rows.append((image.name, st.st_size, st.st_mtime_ns))
        except OSError:
            rows.append((image.name, -1, -1))
    return rows


@dataclass
class LeakIndex:
    """Hashes of the test images at every crop box; `owner[i]` is the test image of hash i."""

    names: list[str]
    hashes: Hashes
    owner: np.ndarray
    unreadable: list[str]

    def __len__(self) -> int:
        return len(self.names)


def build_index(images: list[TestImage]) -> LeakIndex:
    parts, owners, names, unreadable = [], [], [], []
    for image in images:
        try:
            grey = load_grey(image.path)
        except ImageRejected as exc:  # a test image that cannot be read cannot be leaked either: say so
            unreadable.append(f"{image.name} ({exc.reason}: {exc.detail})")
            continue
        parts.append(hash_variants(grey, CROP_BOXES))
        owners.append(np.full(len(CROP_BOXES), len(names), dtype=np.int32))
        names.append(image.name)
    owner = np.concatenate(owners) if owners else np.zeros(0, np.int32)
    return LeakIndex(names, Hashes.concat(parts), owner, unreadable)


def cached_index(images: list[TestImage], cache_dir: Path, key: str) -> LeakIndex:
    """`build_index`, saved as RUN/cache/leak/<key>.npz (key: the digest of `listing`) and read back
    by every later shard, process and rerun of the same test sets."""
    path = cache_dir / f"{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as data:
            return LeakIndex(data["names"].tolist(), Hashes(data["bits"], data["vectors"]), data["owner"],
                             data["unreadable"].tolist())
    except (OSError, KeyError, ValueError):
        pass  # missing or damaged: rebuild
    index = build_index(images)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:6]}.npz"
    np.savez(tmp, names=np.array(index.names, dtype=str), bits=index.hashes.bits, vectors=index.hashes.vectors,
             owner=index.owner, unreadable=np.array(index.unreadable, dtype=str))
    os.replace(tmp, path)
    return index
