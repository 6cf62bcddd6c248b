"""Leak-check benchmarks: what the `leak_check` stage costs per pair, and how matching scales.

    .venv/bin/python benchmarks/bench_leak.py [--pairs 64] [--size 512] [--repeats 3]

- `hash`: pairs/s of `hash_pair_images` (decode both images small + one DCT hash each) against a bare
  loop that only decodes the same files the same way (`load_grey`): the hash's own share.
- `index`: test images/s hashed at every crop box (`build_index`), once per run and test listing.
- `match`: candidate images/s matched (`nearest`) against indexes of 100 / 1,000 / 5,000 test images
  (random 64-bit hashes: the work does not depend on the bits).
Runs interleave and report medians; one thread (OMP_NUM_THREADS=1).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    import numpy as np
    import pandas as pd

    from tasks.leak.check import nearest
    from tasks.leak.phash import CROP_BOXES, Hashes, load_grey
    from tasks.leak.stage import hash_pair_images
    from tasks.leak.test_sets import LeakIndex, TestImage, build_index
    from tasks.offline.synth import synthesize_paired

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        per_type = max(1, args.pairs // 4)
        synthesize_paired(Path(tmp), per_type=per_type, seed=0, size=(args.size, args.size))
        rainy = sorted(Path(tmp).glob("*/input/*.png"))
        rows = pd.DataFrame({"pair_id": [p.stem for p in rainy], "source": "bench", "rainy_path": [str(p) for p in rainy],
                             "clean_path": [str(p).replace("/input/", "/target/") for p in rainy]})
        n = len(rows)

        def bare():
            for r in rows.itertuples():
                load_grey(r.clean_path)
                load_grey(r.rainy_path)

        def hashed():
            hash_pair_images(rows)

        times = {"bare decode": [], "decode + hash": []}
        for _ in range(args.repeats):
            for name, fn in (("bare decode", bare), ("decode + hash", hashed)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        base = n / statistics.median(times["bare decode"])
        print(f"\n{n} pairs of {args.size}x{args.size} PNG, median of {args.repeats}:")
        print("| path | pairs/s | x bare |\n|---|---|---|")
        for name, ts in times.items():
            rate = n / statistics.median(ts)
            print(f"| {name} | {rate:.0f} | {rate / base:.2f} |")

        images = [TestImage(f"t:{p.name}", p) for p in rainy[:32]]
        start = time.perf_counter()
        build_index(images)
        print(f"\ntest index: {len(images) / (time.perf_counter() - start):.0f} test images/s "
              f"({len(CROP_BOXES)} crop boxes each)")

    rng = np.random.default_rng(0)
    print("\n| test images | hashes | candidate images/s matched |\n|---|---|---|")
    query = Hashes(rng.integers(0, 2**63, 2000, dtype=np.uint64),
                   rng.standard_normal((2000, 63)).astype(np.float32))
    for tests in (100, 1000, 5000):
        m = tests * len(CROP_BOXES)
        index = LeakIndex([f"t{i}" for i in range(tests)],
                          Hashes(rng.integers(0, 2**63, m, dtype=np.uint64), rng.standard_normal((m, 63)).astype(np.float32)),
                          np.repeat(np.arange(tests, dtype=np.int32), len(CROP_BOXES)), [])
        q = Hashes(query.bits[: max(50, 200_000 // tests)], query.vectors[: max(50, 200_000 // tests)])
        start = time.perf_counter()
        nearest(q, index, 12)
        print(f"| {tests} | {m} | {len(q) / (time.perf_counter() - start):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
