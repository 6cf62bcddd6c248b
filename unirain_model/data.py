"""Training and validation data for the derainer, from a manifest or a folder in the paper's layout.

Pairs come from either
- a manifest folder (Parquet: `pair_id, source, rain_type, rainy_path, clean_path, width, height`,
  e.g. `RUN/manifests/distilled` or `RUN/manifests/candidates`), or
- a folder `DIR/{drs,drd,nrs,nrd}/{input,target}/NAME.ext` (pairs by file name, type by folder; the
  all-weather types' folders `snow/`, `fog/` too: every declared type, `data_manifests/degradations.py`).

A run names the degradation types it trains on (`types:` at the top of its config, default the four
rain types: `run_types`); `read_pairs(..., types=...)` keeps those and `TypeTable` orders them as
declared, so CoBa, the sampler and the reports see N types, whatever N is.

Training samples are a pure function of (seed, global sample index g), so a resumed run sees exactly
the batches an uninterrupted run would, with no sampler state to save, and DDP ranks take disjoint
index ranges. `g` fixes the pair, the crop and the flip/rotation; which pair depends on the sampler:
- `balanced` (ours): type `types[g mod N]` (round-robin, so every batch is type-balanced), then a
  random pair of that type;
- `shuffle` (the authors' released code): one merged list of all training pairs, permuted afresh each
  epoch (seeded by (seed, epoch)); an epoch is `iters_per_epoch` iterations and visits every pair
  once (the last iteration of an epoch wraps to the permutation's start, as torch's DistributedSampler
  pads). Batches then mix the types in the data's proportions.

A pair whose images cannot be read (or whose sizes differ) is skipped with one warning, never a crash.
"""
from __future__ import annotations

import hashlib
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, Sampler

from data_manifests import TYPE_FOLDERS, ManifestError, absolute_paths, all_types, order_types, pair_id, resolve_types

log = logging.getLogger(__name__)

FOLDER_TO_TYPE = {folder: rain_type for rain_type, folder in TYPE_FOLDERS.items()}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}
MANIFEST_COLUMNS = ("pair_id", "source", "rain_type", "rainy_path", "clean_path")


class DataError(ValueError):
    """Training/evaluation data that cannot be used at all (missing, empty, wrong columns)."""


class BadImage(Exception):
    """One pair that cannot be used; callers skip it with a warning."""


# ----------------------------------------------------------------------------- pair tables
def read_pairs(path: str | Path, source: str | None = None, types: Iterable[str] | None = None) -> pd.DataFrame:
    """Pairs from a manifest folder or a paper-layout folder, one row per pair.

    Columns: pair_id, source, rain_type, rainy_path, clean_path (paths as strings). `types`: keep only
    these degradation types (one warning counts the rows left out); None keeps every declared type.
    Raises DataError with a clear message when nothing usable is there.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data not found: {path}")
    if path.is_dir() and any(path.glob("*.parquet")):
        return _keep_types(_read_manifest(path), types, path)
    if path.is_dir() and any((path / f).is_dir() for f in FOLDER_TO_TYPE):
        return _keep_types(_read_paper_folder(path, source or path.name, types), types, path)
    if path.is_dir():
        raise DataError(
            f"{path}: neither a manifest folder (no *.parquet) nor a folder in the paper layout "
            f"({'/'.join(FOLDER_TO_TYPE)}/{{input,target}}) — is the manifest empty?"
        )
    raise DataError(f"{path}: expected a folder (a manifest or the paper layout)")


def check_source(path: str | Path) -> None:
    """The cheap part of `read_pairs`' checks (no image hashing, no full read): raises DataError
    when `path` is missing, an empty manifest, or a folder with no pairs, so a command can refuse
    it before starting any work."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data not found: {path}")
    if path.is_dir() and any(path.glob("*.parquet")):
        import pyarrow.dataset as pads

        try:
            rows = pads.dataset(str(path), format="parquet").count_rows()
        except Exception as exc:
            raise DataError(f"{path}: cannot read the manifest: {exc}") from None
        if rows == 0:
            raise DataError(f"{path}: the manifest is empty (no pairs to train or evaluate on)")
        return
    if path.is_dir() and any((path / f / "input").is_dir() and any((path / f / "input").iterdir()) for f in FOLDER_TO_TYPE):
        return
    read_pairs(path)  # raises the precise error


def _read_manifest(folder: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(folder)
    except Exception as exc:  # pyarrow raises many types for broken folders
        raise DataError(f"{folder}: cannot read the manifest: {exc}") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{folder}: manifest lacks columns {missing}")
    if frame.empty:
        raise DataError(f"{folder}: the manifest is empty (no pairs to train or evaluate on)")
    try:  # image paths are relative to their source's root, which the run's run.json names
        frame = absolute_paths(frame, folder, ("rainy_path", "clean_path"))
    except ManifestError as exc:
        raise DataError(str(exc)) from None
    unknown = sorted(set(frame["rain_type"]) - set(all_types()))
    if unknown:
        warnings.warn(f"{folder}: ignoring rows with unknown rain_type {unknown}", stacklevel=2)
        frame = frame[frame["rain_type"].isin(all_types())]
    frame = frame.loc[:, list(MANIFEST_COLUMNS)].astype({"rainy_path": str, "clean_path": str})
    return frame.drop_duplicates("pair_id").sort_values("pair_id").reset_index(drop=True)


def _keep_types(frame: pd.DataFrame, types: Iterable[str] | None, where: Path) -> pd.DataFrame:
    if types is None:
        return frame
    types = resolve_types(types)
    out = frame["rain_type"].isin(types)
    if not out.all():
        left = frame.loc[~out, "rain_type"].value_counts().sort_index()
        warnings.warn(f"{where}: leaving out {int((~out).sum())} pair(s) of types outside this run's types "
                      f"({', '.join(f'{t}: {n}' for t, n in left.items())}); the run's types: {', '.join(types)}",
                      stacklevel=3)
    if not out.any():
        raise DataError(f"{where}: no pairs of this run's types ({', '.join(types)}); the data holds "
                        f"{', '.join(order_types(frame['rain_type'].unique()))}")
    return frame[out].reset_index(drop=True)


def run_types(config: str | Path | None) -> tuple[str, ...]:
    """The degradation types a run config names (`types:` at its top level: keys, families, `all`, or a
    comma-separated string), default the four rain types. A bad value is a ConfigError naming `types`, and
    so is a set too large for the config's CoBa floor (`train.reweighting.min_weight` × types > 1)."""
    from data_manifests.config_base import ConfigError

    if config is None:
        return resolve_types(None)
    import yaml

    try:
        data = yaml.safe_load(Path(config).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{config}: cannot read the config: {exc}") from None
    try:
        types = resolve_types(data.get("types") if isinstance(data, dict) else None)
    except ValueError as exc:
        raise ConfigError(f"{config}: {exc}") from None
    rw = ((data.get("train") or {}).get("reweighting") or {}) if isinstance(data, dict) else {}
    floor = rw.get("min_weight", 0.1) if isinstance(rw, dict) else 0.1
    if isinstance(floor, (int, float)) and floor * len(types) > 1:
        raise ConfigError(f"{config}: train.reweighting.min_weight: {floor} x {len(types)} types = "
                          f"{floor * len(types):g} > 1 (every type's floor must fit in the weights); use at most "
                          f"{1 / len(types):.3g} with types: {', '.join(types)}")
    return types


def _pair_digest(rainy: Path, clean: Path) -> str:
    """pair_id from the files' bytes, as ingest computes it (blake2b via data_manifests)."""
    def digest(p: Path) -> str:
        h = hashlib.blake2b(digest_size=16)
        h.update(p.read_bytes())
        return h.hexdigest()

    return pair_id(digest(rainy), digest(clean))


def _read_paper_folder(root: Path, source: str, types: Iterable[str] | None = None) -> pd.DataFrame:
    rows = []
    wanted = set(resolve_types(types)) if types is not None else None
    for folder, rain_type in FOLDER_TO_TYPE.items():
        inputs = root / folder / "input"
        if wanted is not None and rain_type not in wanted:
            continue  # not hashed at all: a rain-only run over an all-weather folder reads no snow/fog
        if not inputs.is_dir():
            continue
        for rainy in sorted(inputs.iterdir()):
            if rainy.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            clean = root / folder / "target" / rainy.name
            if not clean.is_file():
                warnings.warn(f"{rainy}: no target {clean.name} beside it; skipped", stacklevel=2)
                continue
            try:
                pid = _pair_digest(rainy, clean)
            except OSError as exc:
                warnings.warn(f"{rainy}: unreadable ({exc}); skipped", stacklevel=2)
                continue
            rows.append((pid, source, rain_type, str(rainy), str(clean)))
    if not rows:
        folders = [f for f, t in FOLDER_TO_TYPE.items() if wanted is None or t in wanted]
        raise DataError(f"{root}: no image pairs in {'/'.join(folders)}/{{input,target}}")
    frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    return frame.drop_duplicates("pair_id").sort_values("pair_id").reset_index(drop=True)


def _unit_hash(key: str) -> float:
    """A stable number in [0, 1) per id: the same split on every machine and run."""
    return int(hashlib.blake2b(f"val:{key}".encode(), digest_size=8).hexdigest(), 16) / 2**64


def split_train_val(pairs: pd.DataFrame, val_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Held-out validation split by a stable hash of pair_id.

    Each type with at least two pairs gets at least one validation pair (CoBa needs a loss for every
    type); a type with a single pair uses it for both, with a warning.
    """
    h = pairs["pair_id"].map(_unit_hash)
    is_val = h < val_fraction
    for rain_type, idx in pairs.groupby("rain_type").groups.items():
        if is_val[idx].any() and not is_val[idx].all():
            continue
        if len(idx) == 1:
            warnings.warn(f"rain type {rain_type} has one pair: used for training and validation", stacklevel=2)
            is_val[idx] = False
            continue
        order = h[idx].sort_values().index
        if is_val[idx].all():  # keep at least one for training
            is_val[order[-1]] = False
        else:
            is_val[order[0]] = True
    train = pairs[~is_val].reset_index(drop=True)
    val = pairs[is_val].reset_index(drop=True)
    single = [t for t, n in pairs.groupby("rain_type").size().items() if n == 1]
    if single:
        val = pd.concat([val, pairs[pairs["rain_type"].isin(single)]]).reset_index(drop=True)
    return train, val


# ----------------------------------------------------------------------------- images
def load_rgb(path: str | Path) -> np.ndarray:
    """uint8 H×W×3 RGB; 16-bit, grayscale, palette, RGBA and CMYK converted. Raises BadImage."""
    try:
        with Image.open(path) as img:
            img.load()
            ImageOps.exif_transpose(img, in_place=True)  # upright as displayed (EXIF orientation)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float64)
                scale = 255.0 / (65535.0 if arr.max() > 255 else 255.0)
                return np.repeat(np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise BadImage(f"{path}: {exc}") from None


def load_pair(rainy: str, clean: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = load_rgb(rainy), load_rgb(clean)
    if a.shape != b.shape:
        raise BadImage(f"{rainy}: size {a.shape[1]}x{a.shape[0]} differs from its clean image {b.shape[1]}x{b.shape[0]}")
    return a, b


def pad_to(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Reflect-pad bottom/right up to at least h×w (numpy reflects repeatedly for tiny images)."""
    ph, pw = max(0, h - img.shape[0]), max(0, w - img.shape[1])
    if ph or pw:
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect" if min(img.shape[:2]) > 1 else "edge")
    return img


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)


# ----------------------------------------------------------------------------- training
@dataclass(frozen=True)
class TypeTable:
    """Pairs grouped by degradation type, in the declared order (`types`: the types present, of the
    run's set when one is given)."""

    types: tuple[str, ...]
    pairs: tuple[tuple[tuple[str, str], ...], ...]  # per type: (rainy, clean) paths

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, types: Iterable[str] | None = None) -> "TypeTable":
        present = set(frame["rain_type"])
        allowed = resolve_types(types) if types is not None else all_types()
        types = tuple(t for t in allowed if t in present)
        pairs = tuple(
            tuple(zip(frame.loc[frame["rain_type"] == t, "rainy_path"], frame.loc[frame["rain_type"] == t, "clean_path"]))
            for t in types
        )
        return cls(types, pairs)


SAMPLERS = ("balanced", "shuffle")


def iters_per_epoch(num_pairs: int, batch_size: int, world_size: int = 1) -> int:
    """Iterations in one pass over `num_pairs` training pairs at `batch_size` per rank (ceil, like a
    DataLoader without drop_last): the length of an epoch for both samplers and the reweighting clock."""
    return max(1, math.ceil(num_pairs / (batch_size * world_size)))


class TrainCrops(Dataset):
    """Item g: a random crop of a pair chosen by `sampler` (see the module doc), seeded by (seed, g).

    `samples_per_iter` (= batch size × world size) decodes g into (iteration, slot) for `shuffle`.
    """

    def __init__(self, table: TypeTable, crop: int, seed: int, max_tries: int = 20, sampler: str = "balanced",
                 samples_per_iter: int = 1):
        if sampler not in SAMPLERS:
            raise ValueError(f"train.sampler: unknown sampler {sampler!r} (known: {', '.join(SAMPLERS)})")
        self.table, self.crop, self.seed, self.max_tries = table, crop, seed, max_tries
        self.sampler, self.samples_per_iter = sampler, samples_per_iter
        self._bad: set[str] = set()
        # shuffle: the merged list, as (type index, index within the type)
        self._flat = [(t, i) for t, pairs in enumerate(table.pairs) for i in range(len(pairs))]
        self._epoch_iters = iters_per_epoch(len(self._flat), samples_per_iter)
        self._perm: tuple[int, np.ndarray] | None = None  # the current epoch's permutation

    def __len__(self) -> int:  # indices come from the sampler; any g is valid
        return 2**62

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, 1, epoch]).permutation(len(self._flat)))
        return self._perm[1]

    def pick(self, g: int) -> tuple[int, int]:
        """(type index, pair index within the type) of sample g — no image is read."""
        if self.sampler == "balanced":
            t = g % len(self.table.types)
            return t, int(np.random.default_rng([self.seed, g]).integers(len(self.table.pairs[t])))
        it, slot = divmod(g, self.samples_per_iter)
        epoch, it_in_epoch = divmod(it, self._epoch_iters)
        pos = (it_in_epoch * self.samples_per_iter + slot) % len(self._flat)
        return self._flat[int(self._permutation(epoch)[pos])]

    def __getitem__(self, g: int):
        t, first = self.pick(g)
        candidates = self.table.pairs[t]
        rng = np.random.default_rng([self.seed, g])
        if self.sampler == "balanced":
            rng.integers(len(candidates))  # `pick` drew the first pair from this stream: stay in step
        for attempt in range(self.max_tries):
            # a bad pair is replaced by a random readable pair of the same type
            rainy, clean = candidates[first if attempt == 0 else int(rng.integers(len(candidates)))]
            if rainy in self._bad:
                continue
            try:
                a, b = load_pair(rainy, clean)
            except BadImage as exc:
                self._bad.add(rainy)
                warnings.warn(f"skipping a bad training pair: {exc}", stacklevel=2)
                continue
            a, b = self._crop_augment(a, b, rng)
            return to_tensor(a), to_tensor(b), t
        raise DataError(f"no readable pair of type {self.table.types[t]} after {self.max_tries} tries")

    def _crop_augment(self, a: np.ndarray, b: np.ndarray, rng: np.random.Generator):
        c = self.crop
        a, b = pad_to(a, c, c), pad_to(b, c, c)
        y = int(rng.integers(a.shape[0] - c + 1))
        x = int(rng.integers(a.shape[1] - c + 1))
        a, b = a[y : y + c, x : x + c], b[y : y + c, x : x + c]
        k, flip = int(rng.integers(4)), bool(rng.integers(2))  # the 8 dihedral transforms
        a, b = np.rot90(a, k), np.rot90(b, k)
        if flip:
            a, b = a[:, ::-1], b[:, ::-1]
        return a, b


class IndexRange(Sampler[int]):
    """Global sample indices of iterations [start, stop) for one DDP rank."""

    def __init__(self, start_iter: int, stop_iter: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.start, self.stop, self.batch, self.rank, self.world = start_iter, stop_iter, batch_size, rank, world_size

    def __iter__(self):
        for it in range(self.start, self.stop):
            base = (it * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.batch


def train_loader(table: TypeTable, crop: int, batch_size: int, seed: int, start_iter: int, stop_iter: int,
                 num_workers: int = 0, rank: int = 0, world_size: int = 1, pin_memory: bool = False,
                 sampler: str = "balanced") -> DataLoader:
    """Batches for iterations start_iter..stop_iter-1, identical whatever the start (resume)."""
    return DataLoader(
        TrainCrops(table, crop, seed, sampler=sampler, samples_per_iter=batch_size * world_size),
        batch_size=batch_size,
        sampler=IndexRange(start_iter, stop_iter, batch_size, rank, world_size),
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=2 if num_workers else None,
    )


# ----------------------------------------------------------------------------- validation
class ValImages(Dataset):
    """Validation pairs of one type: centre crops of `crop` (reflect-padded when smaller) or, with
    crop=None, whole images. Bad pairs yield None and are dropped by `collate_skip_bad`."""

    def __init__(self, pairs: Sequence[tuple[str, str]], crop: int | None):
        self.pairs, self.crop = list(pairs), crop

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        rainy, clean = self.pairs[i]
        try:
            a, b = load_pair(rainy, clean)
        except BadImage as exc:
            warnings.warn(f"skipping a bad validation pair: {exc}", stacklevel=2)
            return None
        if self.crop:
            c = self.crop
            a, b = pad_to(a, c, c), pad_to(b, c, c)
            y, x = (a.shape[0] - c) // 2, (a.shape[1] - c) // 2
            a, b = a[y : y + c, x : x + c], b[y : y + c, x : x + c]
        return to_tensor(a), to_tensor(b)


def collate_skip_bad(items: Iterable):
    items = [it for it in items if it is not None]
    if not items:
        return None
    return torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])


def val_loaders(table: TypeTable, crop: int | None, batch_size: int, max_per_type: int | None = None,
                num_workers: int = 0, rank: int = 0, world_size: int = 1) -> dict[str, DataLoader]:
    """One loader per type (in `table.types` order); under DDP each rank takes every world-th pair."""
    loaders = {}
    for t, pairs in zip(table.types, table.pairs):
        chosen = list(pairs[:max_per_type] if max_per_type else pairs)[rank::world_size]
        loaders[t] = DataLoader(
            ValImages(chosen, crop),
            batch_size=batch_size if crop else 1,
            shuffle=False,
            num_workers=num_workers,
            collate_fn=collate_skip_bad,
        )
    return loaders
