"""Helpers for the public-dataset adapters: finding a dataset's pair folders under a root, and the
name keys that pair a rainy file with its clean twin.

A *finder* looks at one folder and returns `(rainy_files, clean_files)` when the folder holds the
dataset's layout, else None. `find_layouts` applies it to the root and, if the root is a dataset
folder above the layout (`train/`, `test/`, `set1/test/`, ...), to the folders below it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from .base import PairListing, child_dirs, find_child, image_files, pair_by_key, strip_rain_affixes

Files = tuple[list[Path], list[Path]]
Finder = Callable[[Path], "Files | None"]
# A folder-name filter for one level below the root; None accepts any name.
NameFilter = Callable[[str], bool] | None


def is_split_name(name: str) -> bool:
    """`train`, `test_a`, `RainTrainH`, `rain_heavy_test`, `val`, `test_set`: a split folder's name."""
    low = name.lower()
    return any(word in low for word in ("train", "test", "val"))


def split_or(*words: str) -> Callable[[str], bool]:
    """A split folder's name, or one where a `words` pattern is found, ignoring case, '-' and '_'."""

    def accept(name: str) -> bool:
        low = name.lower().replace("-", "").replace("_", "")
        return is_split_name(name) or any(re.search(word, low) for word in words)

    return accept


def subdirs(folder: Path) -> list[Path]:
    return sorted(child_dirs(folder))


def child_path(folder: Path, relative: str) -> Path | None:
    """`folder/relative` matched case-insensitively part by part (`rain/X2` finds `Rain/x2`); '.' is folder."""
    current: Path | None = folder
    for part in relative.split("/"):
        if part == ".":
            continue
        current = find_child(current, [part]) if current is not None else None
    return current


def first_child(folder: Path, options: Iterable[str]) -> Path | None:
    for option in options:
        found = child_path(folder, option)
        if found is not None:
            return found
    return None


def dir_pair_finder(rainy_dirs: Sequence[str], clean_dirs: Sequence[str]) -> Finder:
    """A finder for a rainy folder beside a clean folder, each the first existing of its options.

    The rainy folder alone marks the layout: a split whose clean folder is missing lists its rainy
    files without twins (rejected as missing_clean at ingest) rather than dropping them unseen.
    """

    def find(folder: Path) -> Files | None:
        rainy, clean = first_child(folder, rainy_dirs), first_child(folder, clean_dirs)
        if rainy is None:
            return None
        return image_files(rainy), image_files(clean) if clean is not None else []

    return find


def find_layouts(root: Path, finder: Finder, expected: str, levels: Sequence[NameFilter] = (is_split_name,)) -> list[tuple[Path, Files]]:
    """The folders at or below `root` that hold the layout, sorted; `levels` filters each level below.

    A matching folder is not searched further. Raises ValueError naming `root` and `expected` when
    `root` is not a folder or nothing matches.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: folder not found (expected {expected})")
    found: list[tuple[Path, Files]] = []
    frontier = [root]
    for depth in range(len(levels) + 1):
        deeper = []
        for folder in frontier:
            files = finder(folder)
            if files is not None:
                found.append((folder, files))
            elif depth < len(levels):
                accept = levels[depth]
                deeper.extend(d for d in subdirs(folder) if accept is None or accept(d.name))
        frontier = deeper
    if not found:
        raise ValueError(f"{root}: no dataset layout found; expected {expected}")
    return sorted(found, key=lambda item: str(item[0]))


def list_layouts(
    root: Path, finder: Finder, key: Callable[[Path], str], rain_type: str | None, expected: str,
    levels: Sequence[NameFilter] = (is_split_name,),
) -> Iterator[PairListing]:
    """Pairs from every matching folder, in folder order then rainy-file order."""
    for _folder, (rainy, clean) in find_layouts(root, finder, expected, levels):
        yield from pair_by_key(rainy, clean, key, rain_type)


# ---- pairing keys ---------------------------------------------------------------------------

def stem_key(path: Path) -> str:
    """Same stem after dropping rain/clean affixes: `1.png`~`1.jpg`, `12_rain`~`12_clean`, `rain-3`~`norain-3`."""
    return strip_rain_affixes(path.stem)


_SCALE_SUFFIX = re.compile(r"x\d+$", re.I)


def jorder_key(path: Path) -> str:
    """JORDER names: rainy `norain-12x2.png` ~ clean `norain-12.png` (the `x2` is the rain-scale tag)."""
    return strip_rain_affixes(_SCALE_SUFFIX.sub("", path.stem))


_INDEX_SUFFIX = re.compile(r"_\d+$")


def many_to_one_key(path: Path) -> str:
    """Rain1400 `901_3.jpg` ~ `901.jpg`, GTAV-NightRain `0000_05.png` ~ `0000.png`: drop the rain index."""
    return _INDEX_SUFFIX.sub("", path.stem).lower()
