"""The dataset-adapter interface and its registry.

An adapter knows one public dataset's layout: which files are rainy, which clean file each pairs
with, and the rain type. It only lists paths (cheap, deterministic order); reading, hashing and
probing happen later in `tasks.ingest`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Iterable, Iterator

from data_manifests import RAIN_TYPES
from data_manifests.registry import Registry, package_modules


@dataclass(frozen=True)
class PairListing:
    rainy_path: Path
    clean_path: Path | None  # None: the rainy file has no clean twin (rejected as missing_clean)
    rain_type: str | None  # None: inferred from the clean image's luminance at ingest


class DatasetAdapter:
    """Subclasses register with `@ADAPTERS.register(name)` and implement `list_pairs`."""

    # The rain type every pair of this dataset has, unless the layout says otherwise.
    default_type: ClassVar[str | None] = "day_streak"

    def list_pairs(self, root: Path, rain_type: str | None = None) -> Iterator[PairListing]:
        raise NotImplementedError


# Every module of this package registers its adapters when first looked up.
ADAPTERS: Registry[type[DatasetAdapter]] = Registry("dataset adapter", lazy_modules=package_modules("tasks.adapters"))


def get_adapter(name: str) -> DatasetAdapter:
    """An adapter instance; an unknown name is a RegistryError listing the known ones."""
    return ADAPTERS.get(name)()


# ---- helpers shared by adapters -------------------------------------------------------------

def image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """The files of an image folder, sorted for a deterministic order.

    Every visible file is listed, not only image suffixes: a stray `.gif` or `.txt` among the images
    becomes a recorded reject at ingest instead of vanishing silently.
    """
    if not folder.is_dir():
        return []
    found: list[Path] = []
    pending = [str(folder)]
    while pending:  # os.scandir knows file types from the directory itself: no stat per file
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue  # hidden files and folders, and our own temporary files
                if entry.is_file():
                    found.append(Path(entry.path))
                elif recursive and entry.is_dir():
                    pending.append(entry.path)
    return sorted(found)


def find_child(root: Path, names: Iterable[str]) -> Path | None:
    """The first existing sub-folder among `names`, matched case-insensitively."""
    if not root.is_dir():
        return None
    children = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    for name in names:
        if name.lower() in children:
            return children[name.lower()]
    return None


def pair_by_key(
    rainy: Iterable[Path], clean: Iterable[Path], key: Callable[[Path], str], rain_type: str | None
) -> Iterator[PairListing]:
    """Pair each rainy file with the clean file of the same key; many rainy may share one clean."""
    clean_by_key: dict[str, Path] = {}
    for path in clean:
        clean_by_key.setdefault(key(path), path)
    for path in rainy:
        yield PairListing(path, clean_by_key.get(key(path)), rain_type)


_RAIN_AFFIX = re.compile(r"(^(no)?rain(y)?[-_])|([-_](no)?rain(y)?$)|([-_](clean|gt)$)|(^(clean|gt)[-_])", re.I)


def strip_rain_affixes(stem: str) -> str:
    """'12_rain' / 'rain-12' / '12_clean' / 'norain-12' / '12_gt' -> '12'."""
    previous = None
    while previous != stem:
        previous, stem = stem, _RAIN_AFFIX.sub("", stem)
    return stem.lower()


def check_rain_type(rain_type: str | None) -> str | None:
    if rain_type is not None and rain_type not in RAIN_TYPES:
        raise ValueError(f"unknown rain type {rain_type!r}; expected one of {', '.join(RAIN_TYPES)}")
    return rain_type
