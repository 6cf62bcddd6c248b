"""Pair sanity (`sanity` stage): quality of the checks on a planted set, and their speed.

Quality. Good pairs come from `unirain synth` (every declared type, at 96x96, 256x256 and 512x512:
the tests' size, the demo's and the issue's). Each kind of damage (`tasks.sanity.planted.DAMAGES`)
is applied at several strengths to a rotating third of the good pairs. Every pair is scored by every
check (`tasks.sanity.checks`); with the config's thresholds (or --threshold NAME=VALUE) it prints
  - per check: precision (of the pairs it flags, the share planted with its damage) and recall (of
    the pairs planted with its damage, the share it flags), over the whole planted set;
  - per damage and strength: the share rejected (by its own check, by any check);
  - per type and size: the false-reject rate on good pairs (any check fires).
Pairs are scored from 8-bit arrays as a PNG would store them (no files: decoding is measured below).

Speed. 512x512 PNG pairs on disk (and the same pairs as JPEG q95), in one process and in `--workers`
processes (default 2; the stage's shards run in parallel the same way), each cell run for at least
`--seconds`, side by side in one run: the sanity stage's function (`check_rows`) on the views that
leak_check hands over (`tasks.sanity.view_cache`), a bare loop of the same checks on the same views,
decode + views alone (the cost that moved to leak_check), the sanity function decoding itself, and
leak_check's hashing plus sanity before (two decodes per image) and after (one decode and the
hand-off file). Pairs/s each, with the load average.

    .venv/bin/python benchmarks/bench_sanity.py --per-type 12 --out /tmp/bench_sanity
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_manifests.degradations import all_types  # noqa: E402
from data_manifests.schemas import TYPE_FOLDERS  # noqa: E402
from tasks.config import SanityConfig  # noqa: E402
from tasks.sanity.checks import CHECKS, ORDER, score_pair  # noqa: E402
from tasks.sanity.planted import CONTROLS, DAMAGES  # noqa: E402
from tasks.sanity import checks as checks_module, planted  # noqa: E402
from tasks.sanity.stage import check_rows, enabled_checks  # noqa: E402
from tasks.sanity.views import load_view, view_of_array  # noqa: E402

SIZES = ((96, 96), (256, 256), (512, 512))


def good_pairs(out: Path, per_type: int, sizes=SIZES, seed: int = 11):
    from tasks.offline.synth import synthesize_paired

    pairs = []
    for size in sizes:
        folder = out / f"good_{size[0]}x{size[1]}"
        if not folder.exists():
            synthesize_paired(folder, per_type=per_type, seed=seed, size=size, rain_types=all_types())
        for rain_type in all_types():
            for path in sorted((folder / TYPE_FOLDERS[rain_type] / "input").glob("*.png")):
                rainy = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0
                target = np.asarray(Image.open(path.parent.parent / "target" / path.name).convert("RGB"), np.float32) / 255.0
                pairs.append({"type": rain_type, "size": size[0], "name": path.name, "rainy": rainy, "target": target})
    return pairs


def planted_scores(pairs) -> pd.DataFrame:
    rows = []
    by_size = {}
    for p in pairs:
        by_size.setdefault(p["size"], []).append(p)
    for size, group in by_size.items():
        for i, p in enumerate(group):
            base = {"type": p["type"], "size": size, "name": p["name"]}
            rows.append({**base, "kind": "good", "label": "good",
                         **score_pair(view_of_array(p["rainy"]), view_of_array(p["target"]))})
            other = group[(i + len(group) // 2 + 1) % len(group)]["target"]
            for kind, damages in DAMAGES.items():
                for j, (label, damage) in enumerate(damages):
                    if (i + j) % 3:
                        continue  # each damage on a rotating third of the good pairs
                    rainy, target = damage(p["rainy"], p["target"], other)
                    rows.append({**base, "kind": kind, "label": label,
                                 **score_pair(view_of_array(rainy), view_of_array(target))})
            for j, (label, change) in enumerate(CONTROLS):  # not damage: both images JPEG-encoded alike
                if (i + j) % 3 == 0:
                    rainy, target = change(p["rainy"], p["target"], other)
                    rows.append({**base, "kind": "control", "label": label,
                                 **score_pair(view_of_array(rainy), view_of_array(target))})
    return pd.DataFrame(rows)


def verdicts(scores: pd.DataFrame, thresholds: dict[str, float]) -> pd.DataFrame:
    out = scores.copy()
    for name, threshold in thresholds.items():
        check = CHECKS.get(name)
        out[f"flag_{name}"] = [check.failed(v, threshold, t) for v, t in zip(scores[check.column], scores["type"])]
    flags = [f"flag_{n}" for n in thresholds]
    out["rejected"] = out[flags].any(axis=1)
    return out


def quality_tables(v: pd.DataFrame, thresholds: dict[str, float]) -> str:
    controls, v = v[v["kind"] == "control"], v[v["kind"] != "control"]  # controls: their own table
    lines = ["| check | threshold | flagged | precision | recall | recall on the types it judges |", "|---|---|---|---|---|---|"]
    for name, threshold in thresholds.items():
        check = CHECKS.get(name)
        flagged = v[f"flag_{name}"]
        planted = v["kind"] == name
        tp = int((flagged & planted).sum())
        prec = tp / flagged.sum() if flagged.sum() else float("nan")
        rec = tp / planted.sum() if planted.sum() else float("nan")
        side = ">" if check.fails == "above" else "<"
        judged = planted & ~v["type"].isin(check.skip_types)
        rec_judged = (flagged & judged).sum() / judged.sum() if judged.sum() else float("nan")
        skip = f" (not {', '.join(sorted(check.skip_types))})" if check.skip_types else ""
        lines.append(f"| {name} | {check.column} {side} {threshold:g} | {int(flagged.sum())} | {prec:.1%} | {rec:.1%} | "
                     f"{rec_judged:.1%}{skip} |")
    lines += ["", "| damage | strength | pairs | rejected by its check | same, on the types it judges | rejected by any check |",
              "|---|---|---|---|---|---|"]
    damaged = v[v["kind"] != "good"]
    for kind, label in [(k, lab) for k, ds in DAMAGES.items() for lab, _ in ds]:
        g = damaged[(damaged["kind"] == kind) & (damaged["label"] == label)]
        own = g[f"flag_{kind}"].mean() if f"flag_{kind}" in g else float("nan")
        judged = g[~g["type"].isin(CHECKS.get(kind).skip_types)]
        own_j = judged[f"flag_{kind}"].mean() if f"flag_{kind}" in g and len(judged) else float("nan")
        lines.append(f"| {kind} | {label} | {len(g)} | {own:.0%} | {own_j:.0%} | {g['rejected'].mean():.0%} |")
    good = v[v["kind"] == "good"]
    lines += ["", "| good pairs | " + " | ".join(f"{s}²" for s in sorted(good["size"].unique())) + " | all |",
              "|---|" + "---|" * (good["size"].nunique() + 1)]
    for t in list(dict.fromkeys(good["type"])) + ["all"]:
        g = good if t == "all" else good[good["type"] == t]
        cells = []
        for s in sorted(good["size"].unique()):
            gs = g[g["size"] == s]
            cells.append(f"{gs['rejected'].mean():.1%} ({int(gs['rejected'].sum())}/{len(gs)})")
        cells.append(f"{g['rejected'].mean():.1%} ({int(g['rejected'].sum())}/{len(g)})")
        lines.append(f"| false rejects, {t} | " + " | ".join(cells) + " |")
    fired = {n: int(good[f"flag_{n}"].sum()) for n in thresholds}
    lines += ["", "good pairs flagged per check: " + ", ".join(f"{n} {k}" for n, k in fired.items())]
    if len(controls):
        lines += ["", "| good pair, stored as | pairs | rejected by jpeg_target | rejected by any check (checks) |",
                  "|---|---|---|---|"]
        for label, g in controls.groupby("label", sort=False):
            own = g["flag_jpeg_target"].mean() if "flag_jpeg_target" in g else float("nan")
            which = {n: int(g[f"flag_{n}"].sum()) for n in thresholds if g[f"flag_{n}"].any()}
            lines.append(f"| {label} | {len(g)} | {own:.0%} | {g['rejected'].mean():.0%} "
                         f"({', '.join(f'{n} {k}' for n, k in which.items()) or 'none'}) |")
    return "\n".join(lines)


# --- speed -----------------------------------------------------------------------------------------

def write_speed_pairs(pairs, folder: Path) -> pd.DataFrame:
    from data_manifests import file_digest
    from tasks.offline.synth.writer import write_png

    rows = []
    for i, p in enumerate(x for x in pairs if x["size"] == 512):
        rp = write_png(folder / "input" / f"{i:05d}.png", p["rainy"])
        tp = write_png(folder / "target" / f"{i:05d}.png", p["target"])
        rows.append({"pair_id": f"p{i:05d}", "source": "bench", "rainy_path": str(rp), "clean_path": str(tp),
                     "rainy_id": file_digest(rp), "clean_id": file_digest(tp)})  # as ingest records them
    return pd.DataFrame(rows)


def as_jpeg(rows: pd.DataFrame, folder: Path, quality: int = 95) -> pd.DataFrame:
    from data_manifests import file_digest

    out = rows.copy()
    for col, part in (("rainy_path", "input"), ("clean_path", "target")):
        paths = []
        for p in rows[col]:
            dest = folder / part / (Path(p).stem + ".jpg")
            dest.parent.mkdir(parents=True, exist_ok=True)
            Image.open(p).save(dest, quality=quality)
            paths.append(str(dest))
        out[col] = paths
        out[col.replace("_path", "_id")] = [file_digest(p) for p in paths]
    return out


# Each measured function takes (rows, hand-off file) and returns the pairs it did. The hand-off file
# is one per worker, written beforehand by `write_handoff` (what leak_check leaves for sanity).

def write_handoff(rows: pd.DataFrame, path: Path) -> None:
    from tasks.leak.stage import hash_pair_images
    from tasks.sanity.view_cache import ViewWriter

    with ViewWriter(path) as views:
        hash_pair_images(rows, views)


def sanity_from_handoff(rows: pd.DataFrame, path: Path) -> int:
    """The sanity stage's own function on views read from the hand-off file (rows, decide, rejects)."""
    from tasks.sanity.view_cache import ViewReader

    with ViewReader(path) as cached:
        out, _ = check_rows(rows, enabled_checks(SanityConfig()), cached=cached)
    assert cached.misses == 0, "the hand-off file lacks views"
    return len(out)


def bare_from_handoff(rows: pd.DataFrame, path: Path) -> int:
    """The same computations without the stage's bookkeeping: read the views, score every check."""
    from tasks.sanity.view_cache import ViewReader

    with ViewReader(path) as cached:
        for r in rows.itertuples(index=False):
            a, b = cached.get(r.rainy_id), cached.get(r.clean_id)
            for name in ORDER:
                CHECKS.get(name).score(a, b)
    return len(rows)


def sanity_decoding(rows: pd.DataFrame, path: Path) -> int:
    """The sanity stage's function with no hand-off: it decodes both images (as before)."""
    out, _ = check_rows(rows, enabled_checks(SanityConfig()))
    return len(out)


def decode_only(rows: pd.DataFrame, path: Path) -> int:
    for r in rows.itertuples(index=False):
        load_view(r.rainy_path), load_view(r.clean_path)
    return len(rows)


def leak_then_sanity_two_decodes(rows: pd.DataFrame, path: Path) -> int:
    """leak_check's per-pair work (decode + hash both images) then sanity decoding them again."""
    from tasks.leak.stage import hash_pair_images

    hash_pair_images(rows)
    return sanity_decoding(rows, path)


def leak_then_sanity_one_decode(rows: pd.DataFrame, path: Path) -> int:
    """leak_check decoding once and keeping the views, sanity reading them (the file written, read, deleted)."""
    handoff = path.with_name(path.name + ".pair")
    write_handoff(rows, handoff)
    n = sanity_from_handoff(rows, handoff)
    handoff.unlink()
    return n


def _repeat(fn, rows: pd.DataFrame, path: Path, seconds: float) -> tuple[int, float, float]:
    """Run `fn` over `rows` again and again for at least `seconds` (short runs are all noise):
    (pairs, wall seconds, CPU seconds of this process)."""
    started, cpu, n = time.perf_counter(), time.process_time(), 0
    while True:
        n += fn(rows, path)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return n, elapsed, time.process_time() - cpu


def timed(fn, parts: list[tuple[pd.DataFrame, Path]], seconds: float) -> tuple[float, float]:
    """(pairs/s, CPU ms per pair) of `fn` over `len(parts)` processes (one part each; one part: in this
    process). CPU time per pair hardly depends on what else the machine runs; the rate does."""
    if len(parts) == 1:
        done = [_repeat(fn, *parts[0], seconds)]
    else:
        with ProcessPoolExecutor(len(parts)) as pool:
            done = list(pool.map(_repeat, [fn] * len(parts), *zip(*parts), [seconds] * len(parts)))
    rate = sum(n / elapsed for n, elapsed, _ in done)  # side by side: the rates add up
    return rate, 1000 * sum(c for _, _, c in done) / sum(n for n, _, _ in done)


def checks_only_ms(rows: pd.DataFrame) -> dict[str, float]:
    views = [(load_view(r.rainy_path), load_view(r.clean_path)) for r in rows.itertuples(index=False)]
    per = {}
    for name in ORDER:
        started = time.perf_counter()
        for _ in range(3):
            for a, b in views:
                CHECKS.get(name).score(a, b)
        per[name] = (time.perf_counter() - started) / (3 * len(views)) * 1000
    return per


SPEED_ROWS = (
    ("sanity stage function (check_rows), views from the hand-off", sanity_from_handoff),
    ("bare loop of the same checks, views from the hand-off", bare_from_handoff),
    ("decode + views only (what moved to leak_check)", decode_only),
    ("sanity stage function decoding itself (no hand-off)", sanity_decoding),
    ("leak_check hashing + sanity, before: two decodes", leak_then_sanity_two_decodes),
    ("leak_check hashing + sanity, after: one decode, hand-off", leak_then_sanity_one_decode),
)


def speed(rows: pd.DataFrame, jpegs: pd.DataFrame, folder: Path, workers: int, seconds: float) -> None:
    print(f"\n## Speed: {len(rows)} pairs of 512x512 images, {os.cpu_count()} CPUs visible, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, each cell >= {seconds:g} s, "
          f"load average at start {os.getloadavg()[0]:.1f}\n")
    print(f"| what | CPU ms per pair | 1 process pairs/s | {workers} processes pairs/s | {workers} idle cores, "
          f"from CPU time: pairs/s |\n|---|---|---|---|---|")
    for fmt, frame in (("PNG", rows), ("JPEG q95", jpegs)):
        one = [(frame, folder / f"{fmt[:3]}-all.views")]
        split = [(frame.iloc[p], folder / f"{fmt[:3]}-{i}.views")
                 for i, p in enumerate(np.array_split(np.arange(len(frame)), workers))]
        for part in one + split:
            write_handoff(*part)
        for label, fn in SPEED_ROWS:
            rate1, cpu1 = timed(fn, one, seconds)
            rate2, _ = timed(fn, split, seconds)
            print(f"| {fmt}: {label} | {cpu1:.1f} | {rate1:.0f} | {rate2:.0f} | {workers * 1000 / cpu1:.0f} |", flush=True)
    print(f"\nload average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    per = checks_only_ms(rows)
    print("per check, ms per pair (views in memory, one process): "
          + ", ".join(f"{k} {v:.2f}" for k, v in per.items()) + f"; all {sum(per.values()):.2f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_sanity"))
    ap.add_argument("--per-type", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threshold", action="append", default=[], help="NAME=VALUE overrides a default")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--seconds", type=float, default=3.0, help="speed: run each cell at least this long")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    thresholds = enabled_checks(SanityConfig())
    for item in args.threshold:
        name, _, value = item.partition("=")
        CHECKS.get(name)
        thresholds[name] = float(value)
    # scores cached per version of the checks and the planted damage (a changed check is rescored)
    code = hashlib.sha1(b"".join(Path(m.__file__).read_bytes() for m in (checks_module, planted))).hexdigest()[:10]
    cache = args.out / f"scores_{args.per_type}_{code}.parquet"
    pairs = None
    if cache.exists():
        scores = pd.read_parquet(cache)
    else:
        pairs = good_pairs(args.out, args.per_type)
        started = time.perf_counter()
        scores = planted_scores(pairs)
        print(f"scored {len(scores)} planted pairs in {time.perf_counter() - started:.0f} s")
        scores.to_parquet(cache)
    v = verdicts(scores, thresholds)
    n_good = int((v["kind"] == "good").sum())
    print(f"\n## Planted set: {n_good} good pairs ({', '.join(all_types())}; sizes "
          f"{', '.join(f'{s}²' for s in sorted(v['size'].unique()))}), "
          f"{int((~v['kind'].isin(['good', 'control'])).sum())} damaged, {int((v['kind'] == 'control').sum())} controls\n")
    print(quality_tables(v, thresholds))
    print("\ngood-pair score quantiles (for choosing thresholds):")
    good = v[v["kind"] == "good"]
    cols = [CHECKS.get(n).column for n in ORDER]
    print(good.groupby("type")[cols].quantile(0.0).round(3).add_suffix(" min").join(
        good.groupby("type")[cols].quantile(1.0).round(3).add_suffix(" max")).T.to_string())
    if args.skip_speed:
        return
    pairs = pairs or good_pairs(args.out, args.per_type, sizes=((512, 512),))
    rows = write_speed_pairs(pairs, args.out / "speed")
    jpegs = as_jpeg(rows, args.out / "speed_jpeg")
    speed(rows, jpegs, args.out, args.workers, args.seconds)


if __name__ == "__main__":
    main()
