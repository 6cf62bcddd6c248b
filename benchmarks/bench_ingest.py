"""Ingest benchmarks: rate against the bare cost of reading and hashing, and memory growth.

    .venv/bin/python benchmarks/bench_ingest.py [--pairs 5000] [--memory 2000,20000] [--only rate,memory]

- `rate`: pairs/s of the ingest pipeline (list → read+hash+probe → dedupe → write shards, the pure
  functions the flow runs, in one thread) and of the whole Prefect flow (API already started, task
  cache refreshed so every repetition probes; chunks run on the flow's 2-thread task runner),
  against a one-thread loop that reads and hashes the same files. Runs are interleaved (bare, pipeline, flow, repeated) over a
  warm page cache, so both sides pay the same IO. Target: ingest ≥ 0.5× the bare rate.
- `memory`: peak RSS of a child process ingesting N pairs (pure pipeline), for each N. Target: 20,000
  pairs ≤ 1.3× the peak for 2,000.

Files: 256×256 PNGs made from synthetic rain pairs, each made unique by one pixel so every file has
its own content hash (made once, kept under --data).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_pairs(root: Path, n: int) -> Path:
    """`root/drs/{input,target}/NNNNNN.png`, n unique pairs (reused when already there)."""
    import numpy as np
    from PIL import Image

    from tasks.offline.synth import synthesize_paired

    out = root / f"pairs_{n}"
    marker = out / ".complete"
    if marker.exists():
        return out
    seeds = root / "seeds"
    if not seeds.exists():
        synthesize_paired(seeds, per_type=8, seed=0)
    bases = [(np.asarray(Image.open(p)), np.asarray(Image.open(str(p).replace("/input/", "/target/"))))
             for p in sorted(seeds.glob("*/input/*.png"))]
    for sub in ("input", "target"):
        (out / "drs" / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rainy, clean = (a.copy() for a in bases[i % len(bases)])
        rainy[0, 0] = clean[0, 0] = [i % 256, (i // 256) % 256, (i // 65536) % 256]
        Image.fromarray(rainy).save(out / "drs" / "input" / f"{i:06d}.png", compress_level=1)
        Image.fromarray(clean).save(out / "drs" / "target" / f"{i:06d}.png", compress_level=1)
    marker.write_text("ok")
    return out


def bare_read_hash(folder: Path) -> int:
    total = 0
    for path in sorted(folder.glob("drs/*/*.png")):
        hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
        total += 1
    return total // 2


def pipeline(folder: Path, run: Path) -> int:
    """What the ingest flow does, without Prefect: list, probe in chunks, dedupe, publish shards."""
    from data_manifests import RunLayout
    from tasks.ingest import stage as ing
    from tasks.config import IngestConfig
    from tasks.ingest.sources import parse_source

    cfg = IngestConfig()
    layout = RunLayout.at(run).create()
    spec = parse_source(f"unirain={folder}")
    listings = ing.list_source(spec)
    rows, rejects = [], []
    for chunk in ing.chunked(listings, cfg.chunk_size):
        got, bad = ing.probe_pairs(spec.name, chunk, cfg)
        rows.extend(got)
        rejects.extend(bad)
    rows = ing.drop_duplicates(rows, "pair_id", rejects, "pair")
    ing.publish(layout, rows, [], rejects, "bench", cfg.num_shards)
    return len(rows)


def bench_rate(args) -> None:
    from flows.prefect_env import configure_offline

    work = Path(args.data)
    folder = make_pairs(work, args.pairs)
    home = Path(tempfile.mkdtemp(prefix="bench-prefect-"))
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_TASKS_REFRESH_CACHE"] = "true"  # every repetition really probes (no cached chunks)
    configure_offline()
    from prefect.testing.utilities import prefect_test_harness

    from flows.stage import run_stage_flow
    from tasks.config import RunConfig

    samples = {"bare read + hash": [], "ingest pipeline (pure)": [], "ingest flow (Prefect)": []}
    with prefect_test_harness(server_startup_timeout=120):
        bare_read_hash(folder)  # warm the page cache for everyone
        for rep in range(args.reps):
            t = time.perf_counter(); n = bare_read_hash(folder); samples["bare read + hash"].append(n / (time.perf_counter() - t))
            run = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
            t = time.perf_counter(); n = pipeline(folder, run); samples["ingest pipeline (pure)"].append(n / (time.perf_counter() - t))
            run = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
            t = time.perf_counter(); n = run_stage_flow("ingest", run, RunConfig(sources=[f"unirain={folder}"]))["candidates"]
            samples["ingest flow (Prefect)"].append(n / (time.perf_counter() - t))
    bare = statistics.median(samples["bare read + hash"])
    print(f"\n### Ingest rate, {args.pairs} pairs of 256×256 PNGs, median of {args.reps}\n")
    print("| path | pairs/s | × bare |\n|---|---|---|")
    for name, values in samples.items():
        rate = statistics.median(values)
        print(f"| {name} | {rate:.0f} | {rate / bare:.2f} |")


def child_peak(n: int, data: str) -> int:
    code = (f"import resource, sys, tempfile; sys.path.insert(0, {str(ROOT)!r}); "
            f"from pathlib import Path; from benchmarks.bench_ingest import pipeline; "
            f"pipeline(Path({data!r}) / 'pairs_{n}', Path(tempfile.mkdtemp())); "
            f"print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1]) * 1024


def bench_memory(args) -> None:
    sizes = [int(s) for s in args.memory.split(",")]
    for n in sizes:
        make_pairs(Path(args.data), n)
    peaks = {n: child_peak(n, args.data) for n in sizes}
    base = peaks[sizes[0]]
    print("\n### Ingest peak memory (child process RSS)\n")
    print(f"| pairs | peak RSS MiB | × {sizes[0]} |\n|---|---|---|")
    for n in sizes:
        print(f"| {n} | {peaks[n] / 2**20:.0f} | {peaks[n] / base:.2f} |")


SECTIONS = {"rate": bench_rate, "memory": bench_memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--memory", default="2000,20000")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "unirain-bench-ingest"))
    parser.add_argument("--only", default="rate,memory")
    args = parser.parse_args()
    for name in args.only.split(","):
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
