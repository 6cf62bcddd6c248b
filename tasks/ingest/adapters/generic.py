"""Adapters for layouts that are not one dataset's: the paper's own layout and any paired folder."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from data_manifests import RAIN_TYPE_FOLDERS, TYPE_FOLDERS

from .base import ADAPTERS, DatasetAdapter, PairListing, find_child, image_files, pair_by_key, strip_rain_affixes

RAINY_DIRS = ("input", "rainy", "rain", "data")
CLEAN_DIRS = ("target", "gt", "norain", "clean")


@ADAPTERS.register("unirain")
class UniRainLayout(DatasetAdapter):
    """`{drs,drd,nrs,nrd}/{input,target}/NAME`: pairs by file name, type by folder.

    The all-weather types have their folders too (`snow/`, `fog/`: every declared type's folder,
    `data_manifests.TYPE_FOLDERS`), so a `unirain synth --types all` set is one source.
    """

    default_type = None  # each folder has its own type

    def list_pairs(self, root: Path, rain_type: str | None = None) -> Iterator[PairListing]:
        if not any((root / folder).is_dir() for folder in TYPE_FOLDERS.values()):
            hint = ""
            if find_child(root, RAINY_DIRS) is not None:  # pointed one level too deep (`unirain=.../drs`)
                hint = f"; {root} holds input/ itself: give its parent, or use paired:TYPE={root}"
            others = "|".join(f for t, f in TYPE_FOLDERS.items() if t not in RAIN_TYPE_FOLDERS)
            raise ValueError(f"{root}: no dataset layout found; expected {'|'.join(RAIN_TYPE_FOLDERS.values())}"
                             f"/{{input,target}}/NAME{hint}; all-weather folders: {others}")
        for type_key, folder in TYPE_FOLDERS.items():
            base = root / folder
            yield from pair_by_key(
                image_files(base / "input"), image_files(base / "target"), lambda p: p.name, rain_type or type_key
            )


@ADAPTERS.register("paired")
class PairedFolder(DatasetAdapter):
    """Any folder with input|rainy|rain|data beside target|gt|norain|clean; pairs by stem.

    The rain type comes from `NAME:TYPE=PATH`; without it, day or night is inferred from the clean
    image's luminance at ingest and the streak type is assumed.
    """

    default_type = None

    def list_pairs(self, root: Path, rain_type: str | None = None) -> Iterator[PairListing]:
        rainy_dir, clean_dir = find_child(root, RAINY_DIRS), find_child(root, CLEAN_DIRS)
        if rainy_dir is None or clean_dir is None:
            raise ValueError(
                f"{root}: expected a rainy folder ({'|'.join(RAINY_DIRS)}) beside a clean folder ({'|'.join(CLEAN_DIRS)})"
            )
        key = lambda p: strip_rain_affixes(p.stem)  # noqa: E731
        yield from pair_by_key(image_files(rainy_dir), image_files(clean_dir), key, rain_type)
