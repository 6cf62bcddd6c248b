"""Adapters for the common all-weather sets: Snow100K, Outdoor-Rain, RESIDE and TransWeather's
"All-Weather" list files. Each docstring gives the layout, the default degradation type and whether
the layout was confirmed against public loader code or is guessed.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from .base import ADAPTERS, DatasetAdapter, PairListing, check_rain_type, unpaired
from .layouts import dir_pair_finder, find_layouts, list_layouts, split_or


# ---- Snow100K ---------------------------------------------------------------------------------

@ADAPTERS.register("snow100k")
class Snow100K(DatasetAdapter):
    """Snow100K (Liu et al., DesnowNet): `synthetic/NAME.jpg` ~ `gt/NAME.jpg` (same file name), beside an unused `mask/`.

    Root: the folder holding `synthetic/` and `gt/`, or up to two levels above it: the training set
    (`train/` or `all/`) and the test sets `test/Snow100K-S|M|L/` (the size of the flakes). `input/`
    is accepted for `synthetic/` (the copy WeatherDiffusion reads: `snow100k/train/{input,gt}`). Type
    snow. Confirmed: a public continual all-weather loader (`Snow100K/train` and
    `Snow100K/test/Snow100K-M`, `synthetic/` ~ `gt/` by the same name) and WeatherDiffusion's
    `datasets/snow100k.py` (`input/` ~ `gt/`, same name, 50,000 training images).
    """

    default_type = "snow"

    def list_pairs(self, root: Path, rain_type: str | None = None) -> Iterator[PairListing]:
        rain_type = check_rain_type(rain_type) or self.default_type
        finder = dir_pair_finder(["synthetic", "input"], ["gt"])
        levels = (split_or("snow100k", "all"),) * 2
        yield from list_layouts(root, finder, lambda p: p.stem.lower(), rain_type,
                                "synthetic/NAME beside gt/NAME (train/, test/Snow100K-S|M|L/)", levels)


# ---- Outdoor-Rain -----------------------------------------------------------------------------

_OUTDOOR_SCENE = re.compile(r"^(im_\d+)", re.I)


def _scene_pairs(rainy: list[Path], clean: list[Path], rain_type: str | None) -> Iterator[PairListing]:
    """A clean file of the same stem (Test1 copies the target under each input's name), else the scene's
    `im_NNNN` target (training: `im_0001_s80_a04.png` ~ `im_0001.png`)."""
    by_stem = {p.stem.lower(): p for p in clean}
    by_scene = {p.stem.lower(): p for p in clean if _OUTDOOR_SCENE.fullmatch(p.stem)}
    used: set[Path] = set()
    for path in rainy:
        twin = by_stem.get(path.stem.lower())
        if twin is None and (m := _OUTDOOR_SCENE.match(path.stem)):
            twin = by_scene.get(m.group(1).lower())
        if twin is not None:
            used.add(twin)
        yield PairListing(path, twin, rain_type)
    yield from unpaired(clean, used, rain_type)


@ADAPTERS.register("outdoorrain")
class OutdoorRain(DatasetAdapter):
    """Outdoor-Rain (Li et al., heavy rain with fog, CVPR'19): `input/im_NNNN_sSS_aAA.png` ~ `gt/im_NNNN.png`.

    Many rainy images per target (streak level `s`, fog level `a`); Test1 (the all-weather benchmark's
    rain+fog test) holds `input/` and `gt/` with the same name on both sides, or a `test1.txt` list
    (use the `allweather` adapter for list files). Root: the folder with `input/` and `gt/` or up to two
    levels above (`outdoor-rain/{train,test1}`). Type `fog` (`FOG_TYPE`): the veil of rain accumulation
    dominates what has to be undone, as in the all-weather papers' "rain + fog" category; the source spec
    can fix another (`outdoorrain:day_streak=PATH`). WeatherDiffusion leaves scenes im_0301..im_0350
    out of training (they are Test1's); here every listed pair is a candidate. Confirmed: WeatherDiffusion's
    `datasets/outdoorrain.py` (`input/` ~ `gt/` + `name[:7] + '.png'`, `test1.txt` with input->gt) and an
    NDR-Restore Outdoor-Rain loader (`im_0001_s80_a04.png` -> `im_0001.png`).
    """

    FOG_TYPE = "fog"
    default_type = FOG_TYPE

    def list_pairs(self, root: Path, rain_type: str | None = None) -> Iterator[PairListing]:
        rain_type = check_rain_type(rain_type) or self.default_type
        finder = dir_pair_finder(["input"], ["gt"])
        levels = (split_or("outdoor", "rain"),) * 2
        for _folder, (rainy, clean) in find_layouts(root, finder, "input/im_NNNN_sSS_aAA.png beside gt/im_NNNN.png",
                                                    levels):
            yield from _scene_pairs(rainy, clean, rain_type)


# ---- RESIDE -----------------------------------------------------------------------------------

def _reside_key(path: Path) -> str:
    """`hazy/0025_0.8_0.1.jpg` ~ `clear/0025.jpg`, ITS `hazy/1_1_0.90179.png` ~ `clear/1.png`: the stem's first field."""
    return path.stem.split("_")[0].lower()


@ADAPTERS.register("reside")
class RESIDE(DatasetAdapter):
    """RESIDE (Li et al., dehazing benchmark): `hazy/ID_A_BETA.ext` ~ `clear/ID.ext` (or `gt/ID.ext`), many hazy per clear.

    Root: the folder with `hazy/` and `clear/`, or up to two levels above: `OTS/` (or `OTS_beta/`),
    `SOTS/outdoor/`, `SOTS/indoor/`, `ITS/`. Type fog. In ITS (indoor) the clear images are larger than
    the hazy ones (FFA-Net centre-crops them); here such pairs are `size_mismatch` rejects, so use OTS/SOTS
    outdoor, the sets the all-weather papers use. Confirmed: FFA-Net-style `RESIDE_Dataset` loaders
    (`hazy/` ~ `clear/`, `id = name.split('_')[0]`, `RESIDE/OTS_beta`, `RESIDE/SOTS/outdoor` with `.png`
    targets) and DEA-Net's dataset README (`hazy/1400_1.png` ~ `clear/1400.png`); `gt/` as the clear
    folder (some SOTS copies) is guessed.
    """

    default_type = "fog"

    def list_pairs(self, root: Path, rain_type: str | None = None) -> Iterator[PairListing]:
        rain_type = check_rain_type(rain_type) or self.default_type
        finder = dir_pair_finder(["hazy"], ["clear", "gt"])
        levels = (split_or("ots", "its", "reside", "outdoor", "indoor", "beta"),) * 2
        yield from list_layouts(root, finder, _reside_key, rain_type, "hazy/ID_A_BETA.ext beside clear/ID.ext", levels)


# ---- All-Weather (TransWeather list files) -----------------------------------------------------

_RAINDROP_NAME = re.compile(r"^\d+_rain$", re.I)


def allweather_type(path: str) -> str:
    """The source set of one All-Weather line, from the naming of its three sets: Outdoor-Rain
    `im_NNNN_sSS_aAA` -> fog (rain + fog), Raindrop `N_rain` -> day_drop, anything else -> snow
    (Snow100K names its images by scene). Guessed from the sets' own naming, not from a list file."""
    stem = Path(path).stem
    if _OUTDOOR_SCENE.match(stem) and re.search(r"_s\d+_a\d+$", stem, re.I):
        return "fog"
    if _RAINDROP_NAME.match(stem):
        return "day_drop"
    return "snow"


_LIST_TYPES = (("snow", "snow"), ("test1", "fog"), ("rainfog", "fog"), ("outdoor", "fog"), ("raindrop", "day_drop"))


def _list_type(list_file: Path) -> str | None:
    """The type every line of a per-set list has (`snowtest100k_L.txt`, `test1.txt`, `raindroptesta.txt`);
    None for the combined `allweather.txt` (typed line by line)."""
    name = list_file.stem.lower()
    return next((t for word, t in _LIST_TYPES if word in name), None)


@ADAPTERS.register("allweather")
class AllWeather(DatasetAdapter):
    """TransWeather's All-Weather list files: `LIST.txt` lines name input images; each target is the line with `input` -> `gt`.

    Root: the folder holding the list file(s) (`allweather.txt`, and the test lists `snowtest100k_L.txt`,
    `test1.txt`, `raindroptesta.txt`); every `*.txt` there is read. A line is resolved against the list's
    folder (a leading '/' dropped), then its parent (TransWeather joins `data/train/` + the line, so lines may
    start with the set's folder name). The target path is the line with every `input` replaced by `gt`, as
    both loaders do. Types: per list name (snow..., test1/rainfog -> fog, raindrop -> day_drop), else per
    line from the set's file naming (`allweather_type`); the source spec can fix one. Confirmed: TransWeather's
    `train_data_functions.py` and WeatherDiffusion's `datasets/allweather.py` (list of input paths,
    `replace('input', 'gt')`, 18,069 training pairs from Outdoor-Rain, Snow100K and Raindrop); the type
    from file names and the line prefix are guessed (the list files themselves are not public in code).
    """

    default_type = None

    def list_pairs(self, root: Path, rain_type: str | None = None) -> Iterator[PairListing]:
        check_rain_type(rain_type)
        root = Path(root)
        lists = sorted(p for p in root.glob("*.txt") if p.is_file()) if root.is_dir() else []
        if not lists:
            raise ValueError(f"{root}: no dataset layout found; expected a list file (allweather.txt, "
                             "snowtest100k_L.txt, test1.txt, ...) of input image paths with targets at input -> gt")
        for list_file in lists:
            fixed = rain_type or _list_type(list_file)
            for number, line in enumerate(list_file.read_text(errors="replace").splitlines(), 1):
                raw = line.strip()
                if not raw:
                    continue
                if "input" not in raw:
                    raise ValueError(f"{list_file}:{number}: expected an input image path (with 'input' in it), "
                                     f"got {raw!r}")
                rainy = _resolve(list_file.parent, raw)
                clean = _resolve(list_file.parent, raw.replace("input", "gt"))
                yield PairListing(rainy, clean if clean.exists() or clean.is_symlink() else None,
                                  fixed or allweather_type(raw))


def _resolve(base: Path, raw: str) -> Path:
    rel = raw.lstrip("/")
    for folder in (base, base.parent):
        candidate = folder / rel
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return base / rel  # missing: ingest rejects it as unreadable, naming the path
