"""Adapters for the public synthetic deraining sets (streaks by day, streaks by night, drops).

Each docstring gives the layout and where it was confirmed (public loader code or the authors'
repositories). A root may be the folder that holds the layout or a dataset folder above it
(`train/`, `test/`, ...); every matching folder below is listed, in sorted order.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from .base import ADAPTERS, DatasetAdapter, PairListing, check_rain_type, image_files
from .layouts import Files, dir_pair_finder, first_child, jorder_key, list_layouts, many_to_one_key, split_or, stem_key

# Restormer / DRSformer keep every set as `{input,target}` with the same file name on both sides.
_INPUT_TARGET = dir_pair_finder(["input"], ["target"])
_INPUT_TARGET_EXPECTED = "input/ and target/ with the same file names (or train/ and test/ folders holding them)"


class _InputTargetSet(DatasetAdapter):
    """Restormer-style set: `{input,target}/NAME`, paired by file stem; type day_streak."""

    def list_pairs(self, root: Path, rain_type: str | None = None) -> Iterator[PairListing]:
        rain_type = check_rain_type(rain_type) or self.default_type
        yield from list_layouts(root, _INPUT_TARGET, stem_key, rain_type, _INPUT_TARGET_EXPECTED)


@ADAPTERS.register("rain13k")
class Rain13K(_InputTargetSet):
    """Rain13K, Restormer's merged training set: `train/Rain13K/{input,target}/NAME`.

    Confirmed: Restormer's data preparation and mmagic's deraining README (`input`/`target`, same names).
    """


@ADAPTERS.register("test100")
class Test100(_InputTargetSet):
    """Test100 (Restormer test split): `test/Test100/{input,target}/NAME`. Confirmed: mmagic deraining README."""


@ADAPTERS.register("test1200")
class Test1200(_InputTargetSet):
    """Test1200 (DID-MDN test, Restormer's split): `test/Test1200/{input,target}/NAME`. Confirmed: mmagic README.

    DID-MDN's own release (rainy and clean side by side in one image) is not supported.
    """


@ADAPTERS.register("test2800")
class Test2800(_InputTargetSet):
    """Test2800 (Restormer's split): `test/Test2800/{input,target}/NAME`. Confirmed: mmagic README.

    The same images in DDN's own layout (`rainy_image/`, `ground_truth/`) are read by `rain1400`.
    """


# ---- JORDER family: Rain100L/H and Rain200L/H ------------------------------------------------

_RAINY_NAME = re.compile(r"^rain-\d+$", re.I)
_CLEAN_NAME = re.compile(r"^norain-\d+$", re.I)


_JORDER_DIRS = dir_pair_finder(["rain/X2", "rain", "input", "rainy"], ["norain", "target", "groundtruth", "gt"])


def _jorder_files(folder: Path) -> Files | None:
    """One folder of a JORDER-family set, in any of the layouts its loaders read (see `_JorderSet`)."""
    flat_clean = [p for p in image_files(folder) if _CLEAN_NAME.match(p.stem)]
    if flat_clean:  # JORDER-E: clean files in the folder itself, rainy beside them or in rainy/
        rainy_dir = first_child(folder, ["rainy"])
        rainy = image_files(rainy_dir) if rainy_dir is not None else [p for p in image_files(folder) if _RAINY_NAME.match(p.stem)]
        return rainy, flat_clean
    return _JORDER_DIRS(folder)


_JORDER_EXPECTED = (
    "rain/X2/norain-Nx2.png beside norain/norain-N.png (JORDER), input/ beside target/ (Restormer, DRSformer), "
    "input/ beside groundtruth/ or gt/, or rain-N.png beside norain-N.png (JORDER-E); "
    "at the root or in train/ and test/ folders"
)


class _JorderSet(DatasetAdapter):
    """Rain100/Rain200 in the layouts their public loaders read; type day_streak.

    - JORDER release: `rain/X2/norain-Nx2.png` ~ `norain/norain-N.png` (also `rain/` without `X2`);
    - DRSformer/Restormer: `{input,target}/N.png`, same names; some loaders: `input/` + `groundtruth/`
      or `gt/` with JORDER names;
    - JORDER-E / PReNet (RainTrainH/L, Rain100H/L): `rain-N.png` + `norain-N.png` in one folder, or
      `rainy/rain-N.png` beside `norain-N.png` (`rainregion-*`, `rainstreak-*` masks are ignored).
    Accepts the set's folder, a split folder, or any split folder below (`train`, `rain_heavy_test`, ...).
    """

    def list_pairs(self, root: Path, rain_type: str | None = None) -> Iterator[PairListing]:
        rain_type = check_rain_type(rain_type) or self.default_type
        yield from list_layouts(root, _jorder_files, jorder_key, rain_type, _JORDER_EXPECTED)


@ADAPTERS.register("rain100l")
class Rain100L(_JorderSet):
    """Rain100L (JORDER light rain): Restormer's `test/Rain100L/{input,target}` or the JORDER/PReNet layouts.

    Confirmed: mmagic README (`input`/`target`); a dataset organiser's loader (`rainy/rain-N` + `norain-N`).
    """


@ADAPTERS.register("rain100h")
class Rain100H(_JorderSet):
    """Rain100H (JORDER heavy rain): Restormer's `test/Rain100H/{input,target}` or the JORDER/PReNet layouts.

    Confirmed: mmagic README; RainTrainH loaders (`rain-N.png` + `norain-N.png`, masks beside them).
    """


@ADAPTERS.register("rain200l")
class Rain200L(_JorderSet):
    """Rain200L: JORDER `rain_data_train_Light/rain/X2/norain-Nx2.png` ~ `norain/norain-N.png`, or DRSformer's
    `Datasets/{train,test}/Rain200L/{input,target}`.

    Confirmed: public `prepare_Rain200L` loaders (`rain/X2` + `norain`, also `input` + `groundtruth`) and
    the DRSformer repository tree (`input`/`target`, same names).
    """


@ADAPTERS.register("rain200h")
class Rain200H(_JorderSet):
    """Rain200H: JORDER `rain_data_train_Heavy/rain/X2/norain-Nx2.png` ~ `norain/norain-N.png`, or DRSformer's
    `Datasets/{train,test}/Rain200H/{input,target}`.

    Confirmed: public `prepare_Rain200H` loaders (1800 train pairs `norain-%dx2.png` ~ `norain-%d.png`) and
    the DRSformer repository tree.
    """


# ---- many rainy per clean ---------------------------------------------------------------------

_ANY = (None, None)  # `rainy_image/` is DDN's own name: any folder names above it


@ADAPTERS.register("rain1400")
class Rain1400(DatasetAdapter):
    """Rain1400 / DDN-Data: `rainy_image/K_i.jpg` ~ `ground_truth/K.jpg`, 14 rainy (i = 1..14) per clean.

    Root: the folder with `rainy_image/` and `ground_truth/`, or one or two levels above it
    (`DDN-Data/{training,testing}/`). Type day_streak. Confirmed: DDN-based loaders
    (`'_'.join(base.split('_')[:-1]) + '.jpg'`), Rain-Over-Me's DDN README.
    """

    def list_pairs(self, root: Path, rain_type: str | None = None) -> Iterator[PairListing]:
        rain_type = check_rain_type(rain_type) or self.default_type
        finder = dir_pair_finder(["rainy_image"], ["ground_truth"])
        yield from list_layouts(root, finder, many_to_one_key, rain_type, "rainy_image/K_i.jpg beside ground_truth/K.jpg", _ANY)


@ADAPTERS.register("gtav_nightrain")
class GTAVNightRain(DatasetAdapter):
    """GTAV-NightRain: `set{1,2,3}/{train,test}/rainy/NNNN_KK.png` ~ `.../gt/NNNN.png`, many rainy per clean.

    The re-rendered version (RLP, ICCV'23) is `{train,test}/{rainy,gt}` with 10 rainy per clean. Root:
    the folder with `rainy/` and `gt/` or up to two levels above. Type night_streak. Confirmed: public
    loaders for both versions (`0000_00.png` -> `0000.png`) and the RLP README (10 rainy per clean).
    """

    default_type = "night_streak"

    def list_pairs(self, root: Path, rain_type: str | None = None) -> Iterator[PairListing]:
        rain_type = check_rain_type(rain_type) or self.default_type
        finder = dir_pair_finder(["rainy"], ["gt"])
        levels = (split_or(r"set\d+", "nightrain"),) * 2
        yield from list_layouts(root, finder, many_to_one_key, rain_type, "rainy/NNNN_KK.png beside gt/NNNN.png", levels)


@ADAPTERS.register("raindrop")
class Raindrop(DatasetAdapter):
    """Raindrop (Qian et al., DeRaindrop): `{train,test_a,test_b}/data/N_rain.png` ~ `gt/N_clean.png`.

    Extensions may differ (.png/.jpg): pairing is by stem without `_rain`/`_clean`. Root: the folder with
    `data/` and `gt/` or up to two levels above. Type day_drop. Confirmed: DeRaindrop-based loaders
    (`data`/`gt` folders, `name.replace('_rain', '_clean')`).
    """

    default_type = "day_drop"

    def list_pairs(self, root: Path, rain_type: str | None = None) -> Iterator[PairListing]:
        rain_type = check_rain_type(rain_type) or self.default_type
        finder = dir_pair_finder(["data"], ["gt"])
        levels = (split_or("raindrop"),) * 2
        yield from list_layouts(root, finder, stem_key, rain_type, "data/N_rain.png beside gt/N_clean.png", levels)
