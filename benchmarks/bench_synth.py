"""Synthesis speed: milliseconds per image for each degradation type (rain, snow, fog) and profile (generation only,
photos already decoded), then the whole `synthesize_paired` path (crop + rain + two PNG writes).
Wall time and CPU time side by side: on a shared machine CPU time is the steadier of the two.

    .venv/bin/python benchmarks/bench_synth.py [--n 30] [--size 256x256]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    from data_manifests.degradations import all_types
    from tasks.offline.synth import CleanSource, parse_size, render, synthesize_paired

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=30, help="images per type and profile")
    ap.add_argument("--size", default="256x256")
    args = ap.parse_args()
    size = parse_size(args.size)

    src = CleanSource()
    for i in range(len(src)):  # decode the built-in photos once, outside the timings
        src.photo(i)
    print(f"{args.n} images of {size[0]}x{size[1]} per row, one process\n")
    print(f"{'type':<14}{'profile':<9}{'wall ms/img':>12}{'cpu ms/img':>12}")
    for rain_type in all_types():
        for profile in ("paired", "gallery"):
            wall, cpu = timed(lambda: [render(src, rain_type, profile, 0, i, size) for i in range(args.n)])
            print(f"{rain_type:<14}{profile:<9}{1000 * wall / args.n:>12.1f}{1000 * cpu / args.n:>12.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = timed(lambda: synthesize_paired(tmp, args.n, seed=0, size=size))
    n = 4 * args.n
    print(f"\nsynthesize_paired, {n} pairs (crop + rain + 2 PNGs): wall {1000 * wall / n:.1f} ms/pair, "
          f"cpu {1000 * cpu / n:.1f} ms/pair, {n / wall:.1f} pairs/s")


if __name__ == "__main__":
    main()
