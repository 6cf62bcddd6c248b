"""Adapters for the public real-rain paired sets: SPA-Data, RainDS, GT-RAIN, RealRain-1k.

Each docstring gives the layout and where it was confirmed (public loader code or the authors'
repositories).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from tasks.imageio import is_image_name
from .base import (
    ADAPTERS, DatasetAdapter, PairListing, check_rain_type, find_child, image_files, pair_by_key, strip_rain_affixes,
    unpaired,
)
from .layouts import Files, dir_pair_finder, find_layouts, is_split_name, list_layouts, split_or, stem_key


# ---- SPA-Data ---------------------------------------------------------------------------------

_SPA_LISTS = ("real_world.txt", "real_test_1000.txt")
_SPA_TEST = dir_pair_finder(["rain", "rainy", "input", "rain_jpg"], ["gt", "norain", "target", "gt_jpg"])
_SPA_EXPECTED = (
    "Training/ with real_world.txt or real_world/ beside real_world_gt/, or a test folder "
    "(real_test_1000/) with rain/ beside gt/ (or input/ beside target/)"
)
_GT_SUFFIX = re.compile(r"[-_]?gt$", re.I)
_SPA_FRAME = re.compile(r"^(\d+)-\d+_")


def _spa_list_file(folder: Path) -> Path | None:
    for name in _SPA_LISTS:
        if (folder / name).is_file():
            return folder / name
    return None


def _spa_finder(folder: Path) -> Files | None:
    # Only locates SPA folders (the files it returns are not used): `SPAData.list_pairs` pairs them.
    if _spa_list_file(folder) or find_child(folder, ["real_world"]):
        return [], []
    return _SPA_TEST(folder)


def _spa_listed(list_file: Path, rain_type: str | None) -> Iterator[PairListing]:
    """Lines `RAINY CLEAN`, paths relative to the list's folder (SPANet writes them with a leading '/')."""
    base = list_file.parent

    def resolve(raw: str) -> Path:
        local = base / raw.lstrip("/")
        # An absolute path that exists as written (a list made on this machine) is taken as is.
        return Path(raw) if not local.exists() and Path(raw).is_absolute() and Path(raw).exists() else local

    for number, line in enumerate(list_file.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise ValueError(f"{list_file}:{number}: expected 'RAINY_PATH CLEAN_PATH', got {line!r}")
        rainy, clean = resolve(parts[0]), resolve(parts[1])
        yield PairListing(rainy, clean if clean.is_file() else None, rain_type)


def _spa_frame_key(path: Path) -> str:
    """`real_world/000/000-3/000-3_2_5.png` ~ `real_world_gt/000/000_2_5.png`: drop the frame number."""
    return _SPA_FRAME.sub(r"\1_", path.stem).lower()


def _spa_test_key(path: Path) -> str:
    """`rain/000.png` ~ `gt/000gt.png` (SPANet's test set), or the same name on both sides."""
    return strip_rain_affixes(_GT_SUFFIX.sub("", path.stem))


@ADAPTERS.register("spa")
class SPAData(DatasetAdapter):
    """SPA-Data (Wang et al., SPANet, CVPR'19), real rain from videos, type day_streak.

    - training: `real_world.txt` lines `/real_world/VVV/VVV-F/VVV-F_x_y.png /real_world_gt/VVV/VVV_x_y.png`
      (paths relative to the list's folder) — used when present; otherwise the folders are paired
      directly, many frames F per clean patch;
    - test: `real_test_1000/{rain,gt}` with `NNN.png` ~ `NNNgt.png` or the same names, also
      `{rainy,gt}`, `{input,target}` (Restormer/DRSformer copies) and `{rain_jpg,gt_jpg}`.
    Root: the SPA root (`Training/`, `Testing/real_test_1000/`), one of those, or up to 3 levels above.
    Confirmed: SPANet's training session (`training/real_world.txt`, `testing/real_test_1000.txt`),
    public loaders (line split into LQ/HQ with a leading '/'; `%03d.png` ~ `%03dgt.png`; patch naming
    `real_world/000/000-f/000-f_x_y.png` ~ `real_world_gt/000/000_x_y.png`). `*_gt.png` twins in one
    folder were not found in any loader and are not supported.
    """

    def list_pairs(self, root: Path, rain_type: str | None = None) -> Iterator[PairListing]:
        rain_type = check_rain_type(rain_type) or self.default_type
        for folder, _ in find_layouts(root, _spa_finder, _SPA_EXPECTED, (is_split_name,) * 3):
            list_file = _spa_list_file(folder)
            if list_file is not None:
                yield from _spa_listed(list_file, rain_type)
            elif find_child(folder, ["real_world"]):
                rainy = image_files(find_child(folder, ["real_world"]), recursive=True)
                clean = image_files(find_child(folder, ["real_world_gt"]) or folder / "real_world_gt", recursive=True)
                yield from pair_by_key(rainy, clean, _spa_frame_key, rain_type)
            else:
                rainy, clean = _SPA_TEST(folder)
                yield from pair_by_key(rainy, clean, _spa_test_key, rain_type)


# ---- RainDS -----------------------------------------------------------------------------------

# RainDS_syn prefixes: `rd-` drop, `rain-` streak, `rd-rain-` both, `norain-` clean, each optionally
# after `pie-` (a second scene family that keeps its own numbering: `pie-rd-5` ~ `pie-norain-5`).
_RAINDS_PREFIX = re.compile(r"^(pie-)?(rd-rain-|rd-|rain-|norain-)?", re.I)


def _rainds_key(path: Path) -> str:
    return _RAINDS_PREFIX.sub(lambda m: m.group(1) or "", path.stem, count=1).lower()


@ADAPTERS.register("rainds")
class RainDS(DatasetAdapter):
    """RainDS (Quan et al., CCN, CVPR'21): `RainDS_syn|RainDS_real/{train,test}/{rainstreak,raindrop,rainstreak_raindrop,gt}`.

    RainDS_syn names: `rain-N` (streak), `rd-N` (drop), `rd-rain-N` (both) ~ `gt/norain-N`, each also with a
    `pie-` prefix (`pie-rd-N` ~ `pie-norain-N`); RainDS_real uses the same name in every folder.
    Types by folder: rainstreak -> day_streak, raindrop -> day_drop, rainstreak_raindrop -> `BOTH_TYPE`
    (day_drop: the drops on the lens dominate what a derainer has to undo); `rainds:TYPE=PATH` sets one
    type for all. Root: a split folder, `RainDS_syn/`, or `RainDS/` (split folders named
    train/test or train_set/test_set). Confirmed: the CCN-based loader (`rd`->`norain`, `rain`->`norain`,
    `rd-rain`->`norain`) and a RainDS loader listing the syn/real naming, `pie-` variants included.
    """

    default_type = None  # the type comes from the folder unless the source fixes one
    BOTH_TYPE = "day_drop"
    FOLDER_TYPES = {"rainstreak": "day_streak", "raindrop": "day_drop", "rainstreak_raindrop": BOTH_TYPE}

    def list_pairs(self, root: Path, rain_type: str | None = None) -> Iterator[PairListing]:
        check_rain_type(rain_type)
        expected = "gt/ beside rainstreak/, raindrop/ and/or rainstreak_raindrop/ (in train/ and test/ folders)"
        for folder, _ in find_layouts(root, _rainds_finder, expected, (split_or("rainds"),) * 2):
            clean = image_files(find_child(folder, ["gt"]) or folder / "gt")
            used: set[Path] = set()  # one gt folder serves the three rainy folders
            for name, folder_type in self.FOLDER_TYPES.items():
                rainy_dir = find_child(folder, [name])
                if rainy_dir is not None:
                    for item in pair_by_key(image_files(rainy_dir), clean, _rainds_key, rain_type or folder_type,
                                            unpaired_clean=False):
                        used.add(item.clean_path)
                        yield item
            yield from unpaired(clean, used, rain_type)


def _rainds_finder(folder: Path) -> Files | None:
    # Only locates RainDS split folders (the files it returns are not used); `gt/` may be missing.
    return ([], []) if find_child(folder, list(RainDS.FOLDER_TYPES)) is not None else None


# ---- GT-RAIN ----------------------------------------------------------------------------------

_GTRAIN_NAME = re.compile(r"^(?P<scene>.+)-(?P<kind>[RC])-(?P<frame>\d+)$")


@ADAPTERS.register("gtrain")
class GTRain(DatasetAdapter):
    """GT-RAIN (Ba et al., ECCV'22): scene folders `SCENE/SCENE-Webcam-R-NNN.png` (rainy frames) with one clean
    `SCENE/SCENE-Webcam-C-000.png`, under `GT-RAIN_train/`, `GT-RAIN_test/` (any depth).

    A rainy frame pairs with the clean frame of the same prefix and frame number if there is one, else
    with the first clean frame of its prefix. Type day_streak. Confirmed: GT-RAIN-based loaders
    (`split('-R-')[0] + '-C-000.png'`) and file names quoted from the test set (`Gurutto_0-0-Webcam-C-000.png`).
    """

    def list_pairs(self, root: Path, rain_type: str | None = None) -> Iterator[PairListing]:
        rain_type = check_rain_type(rain_type) or self.default_type
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"{root}: folder not found (expected GT-RAIN scene folders)")
        by_folder: dict[Path, list[Path]] = {}
        for path in image_files(root, recursive=True):  # each folder once, bad entries kept as rejects
            if is_image_name(path) and _GTRAIN_NAME.match(path.stem):
                by_folder.setdefault(path.parent, []).append(path)
        rainy_count = 0
        for folder in sorted(by_folder):
            clean: dict[str, dict[str, Path]] = {}
            rainy: list[tuple[Path, str, str]] = []
            for path in by_folder[folder]:
                m = _GTRAIN_NAME.match(path.stem)
                if m["kind"] == "C":
                    clean.setdefault(m["scene"], {}).setdefault(m["frame"], path)
                else:
                    rainy.append((path, m["scene"], m["frame"]))
            used: set[Path] = set()
            for path, scene, frame in rainy:
                frames = clean.get(scene, {})
                twin = frames.get(frame) or (frames[min(frames)] if frames else None)
                used.add(twin)
                yield PairListing(path, twin, rain_type)
            yield from unpaired([p for frames in clean.values() for p in frames.values()], used, rain_type)
            rainy_count += len(rainy)
        if rainy_count == 0:
            raise ValueError(f"{root}: no GT-RAIN frames found; expected scene folders with SCENE-R-NNN.png and SCENE-C-NNN.png")


# ---- RealRain-1k ------------------------------------------------------------------------------

@ADAPTERS.register("realrain1k")
class RealRain1k(DatasetAdapter):
    """RealRain-1k (Li et al.): `RealRain-1k/RealRain-1k-{L,H}/{train,test}/{input,target}/NAME`, same names.

    L (light) and H (heavy) subsets; point the root at `RealRain-1k-L` or `RealRain-1k-H` to take one,
    at `RealRain-1k` for both. Type day_streak. Confirmed: public loaders and configs
    (`RealRain-1k-H/train/input` ~ `p.replace("input", "target")`); the authors' repository has only a
    README, so the `train/test` names are taken from those loaders.
    """

    def list_pairs(self, root: Path, rain_type: str | None = None) -> Iterator[PairListing]:
        rain_type = check_rain_type(rain_type) or self.default_type
        finder = dir_pair_finder(["input"], ["target"])
        expected = "RealRain-1k-{L,H}/{train,test}/{input,target} with the same file names"
        yield from list_layouts(root, finder, stem_key, rain_type, expected, (split_or("realrain"),) * 3)
