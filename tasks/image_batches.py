"""Batches of preprocessed images from files, decoded in DataLoader workers so IO overlaps compute.

`iter_batches(rows, preprocess, batch_size, num_workers)` yields `Batch(ids, tensor, failures)` in
row order. An image that cannot be used never raises: it comes back as a `Failure(item_id, reason,
detail)` (reasons from `tasks.imageio.ImageRejected`, or `preprocess_error`) for the stage to
write to rejects. `tensor` is None when every item of a batch failed.
"""
from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple, Sequence

import torch
from torch.utils.data import DataLoader, Dataset


@dataclass(frozen=True)
class Failure:
    item_id: str
    reason: str
    detail: str


class Batch(NamedTuple):
    ids: list[str]
    tensor: torch.Tensor | None
    failures: list[Failure]


class ImageRowsDataset(Dataset):
    """(item_id, path) rows -> (item_id, tensor or None, Failure or None)."""

    def __init__(self, rows: Sequence[tuple[str, str]], preprocess: Callable, max_pixels: int | None = None):
        self.rows = list(rows)
        self.preprocess = preprocess
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        from tasks.imageio import DEFAULT_MAX_PIXELS, ImageRejected, load_rgb

        item_id, path = self.rows[i]
        try:
            image = load_rgb(path, self.max_pixels or DEFAULT_MAX_PIXELS)
        except ImageRejected as exc:
            return item_id, None, Failure(item_id, exc.reason, exc.detail)
        except Exception as exc:  # noqa: BLE001 - one bad file must never stop a stage
            return item_id, None, Failure(item_id, "unreadable", f"{type(exc).__name__}: {exc}")
        try:
            return item_id, self.preprocess(image), None
        except Exception as exc:  # noqa: BLE001
            return item_id, None, Failure(item_id, "preprocess_error", f"{type(exc).__name__}: {exc}")


def collate(samples) -> Batch:
    ids = [s[0] for s in samples if s[2] is None]
    tensors = [s[1] for s in samples if s[2] is None]
    failures = [s[2] for s in samples if s[2] is not None]
    return Batch(ids, torch.stack(tensors) if tensors else None, failures)


def _worker_init(_worker_id: int) -> None:
    # Workers decode and resize: one thread each, so they do not fight the model's threads.
    torch.set_num_threads(1)


def iter_batches(
    rows: Sequence[tuple[str, str]],
    preprocess: Callable,
    batch_size: int,
    num_workers: int = 2,
    *,
    max_pixels: int | None = None,
    pin_memory: bool | None = None,
    multiprocessing_context: str | None = None,
) -> Iterator[Batch]:
    """Yield batches in row order; with `num_workers > 0` decoding runs ahead in worker processes.

    Workers are not persistent: a stage calls this once per shard, and idle workers holding
    decoded images between shards would only cost memory.
    """
    if not rows:
        return
    num_workers = max(0, min(num_workers, len(rows) // max(1, batch_size) + 1, os.cpu_count() or 1))
    if multiprocessing.current_process().daemon:  # a Dask worker process: daemons cannot start children
        num_workers = 0
    loader = DataLoader(
        ImageRowsDataset(rows, preprocess, max_pixels),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        worker_init_fn=_worker_init if num_workers else None,
        persistent_workers=False,
        prefetch_factor=2 if num_workers else None,
        multiprocessing_context=multiprocessing_context if num_workers else None,
    )
    yield from loader
