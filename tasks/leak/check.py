"""The leak decision as pure functions: candidate image hashes against a `LeakIndex`.

A candidate image is a near duplicate of a test image when some crop box of that test image is within
`max_distance` bits of its hash (the cheap filter) **and** the low-frequency correlation at that box
is at least `min_correlation` (the confirmation that removes the unrelated photos a 64-bit hash lets
through; `tasks.leak.phash` has the measured ranges). With an embedder configured, a third test:
CLIP image cosine >= `clip_min_cos` (`LeakCheckStage`), for the few pairs that got this far.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.leak.phash import Hashes, hamming
from tasks.leak.test_sets import LeakIndex

# Hamming distances of at most this many (query x test hash) cells at a time: the XOR intermediate is
# 8 bytes a cell, so ~32 MB whatever the sizes.
CELLS = 4_000_000


@dataclass(frozen=True)
class Nearest:
    """Per query image: the closest test hash in bits, and among the hashes within `max_distance`
    the best-correlated one (`test` = index into `LeakIndex.names`, -1 and NaN when none)."""

    min_distance: np.ndarray   # (n,) uint8, 64 when the index is empty
    test: np.ndarray           # (n,) int32
    distance: np.ndarray       # (n,) uint8, the distance of that best-correlated hash
    correlation: np.ndarray    # (n,) float32


def nearest(query: Hashes, index: LeakIndex, max_distance: int) -> Nearest:
    n, m = len(query), len(index.hashes)
    min_distance = np.full(n, 64, np.uint8)
    test = np.full(n, -1, np.int32)
    distance = np.full(n, 64, np.uint8)
    correlation = np.full(n, np.nan, np.float32)
    if not n or not m:
        return Nearest(min_distance, test, distance, correlation)
    step = max(1, CELLS // m)
    for lo in range(0, n, step):
        d = hamming(query.bits[lo:lo + step], index.hashes.bits)
        min_distance[lo:lo + len(d)] = d.min(1)
        qi, ti = np.nonzero(d <= max_distance)
        if not len(qi):
            continue
        corr = np.einsum("ij,ij->i", query.vectors[lo + qi], index.hashes.vectors[ti])
        order = np.lexsort((-corr, qi))            # per query: best correlation first
        first = order[np.r_[True, qi[order][1:] != qi[order][:-1]]]
        rows = lo + qi[first]
        test[rows] = index.owner[ti[first]]
        distance[rows] = d[qi[first], ti[first]]
        correlation[rows] = corr[first]
    return Nearest(min_distance, test, distance, correlation)


def is_near_duplicate(found: Nearest, min_correlation: float) -> np.ndarray:
    return (found.test >= 0) & (np.nan_to_num(found.correlation, nan=-1.0) >= min_correlation)
