"""Write synthetic sets: paired (the paper's folder layout) and an unpaired stand-in gallery, for any
declared degradation types (default: the four rain types; `snow`, `fog` for all-weather).

Each image gets its own generator seeded from (seed, profile, type index, index), the type index
being the type's place in declaration order (rain types first, so their images never changed), so an image does not
depend on which others are made or in what order, and the same seed gives the same bytes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from data_manifests.degradations import resolve_types, type_index

from .base import PROFILES, RAIN_TYPES, TYPE_FOLDERS, RainPair, get_generator
from .clean_photos import CleanSource
from .writer import write_png

MIN_SIDE, MAX_SIDE = 64, 8192  # ingest rejects images under 64 px on a side


@dataclass(frozen=True)
class SynthItem:
    rain_type: str
    name: str
    input_path: Path
    target_path: Path | None  # None for gallery images


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> (width, height)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"size must look like WIDTHxHEIGHT (e.g. 256x256), got {text!r}")
    size = int(m.group(1)), int(m.group(2))
    check_size(size)
    return size


def check_size(size: tuple[int, int]) -> None:
    if any(not MIN_SIDE <= s <= MAX_SIDE for s in size):
        raise ValueError(f"size {size[0]}x{size[1]}: each side must be between {MIN_SIDE} and {MAX_SIDE} px")


def check_seed(seed: int) -> None:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")


def image_rng(seed: int, profile: str, rain_type: str, index: int) -> np.random.Generator:
    check_seed(seed)
    return np.random.default_rng([seed, PROFILES.index(profile), type_index(rain_type), index])


def render(source: CleanSource, rain_type: str, profile: str, seed: int, index: int,
           size: tuple[int, int]) -> RainPair:
    """One (rainy, target) pair, float32 HxWx3."""
    rng = image_rng(seed, profile, rain_type, index)
    clean = source.sample(rng, size)
    return get_generator(rain_type)(clean, rng, profile)


def _refuse_strays(folder: Path, planned: Iterable[str]) -> None:
    """A second run into the same folder may repeat the first, but must not mix with other images."""
    if not folder.is_dir():
        return
    stray = sorted({p.name for p in folder.glob("*.png")} - set(planned))
    if stray:
        raise FileExistsError(f"{folder} already holds {len(stray)} image(s) this run would not write "
                              f"(e.g. {stray[0]}); use an empty output folder")


def synthesize_paired(out: str | Path, per_type: int, seed: int = 0, clean_dir: str | Path | None = None,
                      size: tuple[int, int] = (256, 256), rain_types: Iterable[str] = RAIN_TYPES,
                      on_item: Callable[[SynthItem], None] | None = None) -> list[SynthItem]:
    """Write ``OUT/<folder>/{input,target}/NAME.png`` (drs, drd, nrs, nrd, snow, fog), ``per_type`` pairs of
    each type in `rain_types` (keys, families or `all`: `data_manifests.resolve_types`)."""
    if per_type < 1:
        raise ValueError(f"per_type must be >= 1, got {per_type}")
    rain_types = list(resolve_types(rain_types))
    check_seed(seed)
    check_size(size)
    source = CleanSource(clean_dir)
    out = Path(out)
    plan = [(t, i, f"{TYPE_FOLDERS[t]}_{i:05d}.png") for t in rain_types for i in range(per_type)]
    for t in dict.fromkeys(t for t, _, _ in plan):
        names = [n for tt, _, n in plan if tt == t]
        for part in ("input", "target"):
            _refuse_strays(out / TYPE_FOLDERS[t] / part, names)
    items = []
    for rain_type, index, name in plan:
        pair = render(source, rain_type, "paired", seed, index, size)
        folder = out / TYPE_FOLDERS[rain_type]
        item = SynthItem(rain_type, name, write_png(folder / "input" / name, pair.rainy),
                         write_png(folder / "target" / name, pair.target))
        items.append(item)
        if on_item:
            on_item(item)
    return items


def synthesize_gallery(out: str | Path, n: int, seed: int = 0, clean_dir: str | Path | None = None,
                       size: tuple[int, int] = (256, 256), rain_types: Iterable[str] = RAIN_TYPES,
                       on_item: Callable[[SynthItem], None] | None = None) -> list[SynthItem]:
    """Write ``n`` unpaired images to ``OUT/synthetic_<folder>_<index>.png``, the types in turn.

    A SYNTHETIC stand-in for a gallery of real rain photos (for demos and tests): it uses the
    generators' ``gallery`` parameter ranges, which differ from the paired ones, but it is not real rain.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    check_seed(seed)
    check_size(size)
    source = CleanSource(clean_dir)
    out = Path(out)
    types = resolve_types(rain_types)
    plan = [(types[i % len(types)], i) for i in range(n)]
    names = [f"synthetic_{TYPE_FOLDERS[t]}_{i:05d}.png" for t, i in plan]
    _refuse_strays(out, names)
    items = []
    for (rain_type, index), name in zip(plan, names):
        pair = render(source, rain_type, "gallery", seed, index, size)
        item = SynthItem(rain_type, name, write_png(out / name, pair.rainy), None)
        items.append(item)
        if on_item:
            on_item(item)
    return items
