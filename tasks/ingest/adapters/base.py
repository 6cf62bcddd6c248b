"""The dataset-adapter interface and its registry.

An adapter knows one public dataset's layout: which files are rainy, which clean file each pairs
with, and the rain type. It only lists paths (cheap, deterministic order); reading, hashing and
probing happen later in `tasks.ingest.stage`.
"""
from __future__ import annotations

import os
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Iterable, Iterator

from data_manifests.degradations import check_type
from data_manifests.registry import Registry, package_modules


@dataclass(frozen=True)
class PairListing:
    """One rainy file and its clean twin. Every file a listing finds is in some PairListing, so the
    funnel accounts for it: a rainy file without a twin has `clean_path=None` (rejected as
    missing_clean), a clean file no rainy file pairs with has `rainy_path=None` (missing_rainy)."""

    rainy_path: Path | None
    clean_path: Path | None
    rain_type: str | None  # a declared degradation type; None: inferred from the clean image's luminance at ingest


class DatasetAdapter:
    """Subclasses register with `@ADAPTERS.register(name)` and implement `list_pairs`."""

    # The rain type every pair of this dataset has, unless the layout says otherwise.
    default_type: ClassVar[str | None] = "day_streak"

    def list_pairs(self, root: Path, rain_type: str | None = None) -> Iterator[PairListing]:
        raise NotImplementedError


# Every module of this package registers its adapters when first looked up.
ADAPTERS: Registry[type[DatasetAdapter]] = Registry("dataset adapter", lazy_modules=package_modules("tasks.ingest.adapters"))


def get_adapter(name: str) -> DatasetAdapter:
    """An adapter instance; an unknown name is a RegistryError listing the known ones."""
    return ADAPTERS.get(name)()


def check_layout(name: str, root: Path, rain_type: str | None = None) -> None:
    """Raise the adapter's ValueError (which names the layout it expects) when `root` holds none of
    it; reads only as far as the first pair, so a command can check its sources before it starts."""
    adapter = get_adapter(name)
    next(iter(adapter.list_pairs(root, rain_type or adapter.default_type)), None)


# ---- helpers shared by adapters -------------------------------------------------------------

def image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """The files of an image folder, sorted for a deterministic order. Never raises for what it finds.

    Every visible entry that is not a sub-folder is listed, not only image suffixes or regular
    files: a stray `.gif` or `.txt`, a FIFO, a socket, a dangling or looping link become recorded
    rejects when ingest reads them (`tasks.imageio.read_file_bytes` names the reason) instead of
    vanishing, blocking or crashing the listing. Plain sub-folders of a flat folder are layout
    (`rain/X2`), not files; a link to a folder there is listed (`not_a_file`).

    `recursive` descends breadth-first, each real folder once (by device and inode), links after
    real folders: a link back to a folder already listed (`sub -> .`) is listed as an entry, and so
    is a folder that cannot be read (`unreadable`), so neither loops nor stops the listing.
    """
    if not folder.is_dir():
        return []
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    pending = deque([Path(folder)])
    while pending:
        current = pending.popleft()
        try:
            st = current.stat()
            if (st.st_dev, st.st_ino) in seen:
                found.append(current)  # a second way into a folder already listed
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(current) as it:  # file types come from the directory itself: no stat per file
                entries = sorted(it, key=lambda e: (e.is_symlink(), e.name))
        except OSError:
            found.append(current)  # cannot be listed: reading it names the reason
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue  # hidden files and folders, and our own temporary files
            try:
                is_dir = entry.is_dir()  # follows links; False for dangling and looping links
            except OSError:
                is_dir = False
            if not is_dir:
                found.append(Path(entry.path))
            elif recursive:
                pending.append(Path(entry.path))
            elif entry.is_symlink():
                found.append(Path(entry.path))
    return sorted(found)


def child_dirs(folder: Path) -> list[Path]:
    """Sub-folders (links to folders included); none when `folder` cannot be listed."""
    try:
        return [p for p in folder.iterdir() if p.is_dir()]
    except OSError:
        return []


def find_child(root: Path, names: Iterable[str]) -> Path | None:
    """The first existing sub-folder among `names`, matched case-insensitively."""
    if not root.is_dir():
        return None
    children = {p.name.lower(): p for p in sorted(child_dirs(root))}
    for name in names:
        if name.lower() in children:
            return children[name.lower()]
    return None


def pair_by_key(
    rainy: Iterable[Path], clean: Iterable[Path], key: Callable[[Path], str], rain_type: str | None,
    unpaired_clean: bool = True,
) -> Iterator[PairListing]:
    """Pair each rainy file with the clean file of the same key; many rainy may share one clean.

    Then, with `unpaired_clean`, every clean file no rainy file took, as a listing without a rainy
    path (missing_rainy). An adapter that pairs one clean folder with several rainy folders passes
    False and calls `unpaired` once itself.
    """
    clean = list(clean)
    clean_by_key: dict[str, Path] = {}
    for path in clean:
        clean_by_key.setdefault(key(path), path)
    used: set[Path] = set()
    for path in rainy:
        twin = clean_by_key.get(key(path))
        if twin is not None:
            used.add(twin)
        yield PairListing(path, twin, rain_type)
    if unpaired_clean:
        yield from unpaired(clean, used, rain_type)


def unpaired(clean: Iterable[Path], used: set[Path], rain_type: str | None) -> Iterator[PairListing]:
    """Listings for the clean files no rainy file pairs with (rejected as missing_rainy at ingest)."""
    for path in clean:
        if path not in used:
            yield PairListing(None, path, rain_type)


_RAIN_AFFIX = re.compile(r"(^(no)?rain(y)?[-_])|([-_](no)?rain(y)?$)|([-_](clean|gt)$)|(^(clean|gt)[-_])", re.I)


def strip_rain_affixes(stem: str) -> str:
    """'12_rain' / 'rain-12' / '12_clean' / 'norain-12' / '12_gt' -> '12'."""
    previous = None
    while previous != stem:
        previous, stem = stem, _RAIN_AFFIX.sub("", stem)
    return stem.lower()


def check_rain_type(rain_type: str | None) -> str | None:
    """A declared degradation type (the rain types, snow, fog) or None; else a ValueError listing them."""
    return check_type(rain_type, "rain type")
