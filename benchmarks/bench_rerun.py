"""Rerun cost of a finished distill: first run vs an unchanged rerun, on a synthetic run with tiny models.

    .venv/bin/python benchmarks/bench_rerun.py [--pairs 2000] [--gallery 200] [--size 128x128] [--shards 8]

Both runs are `unirain distill` processes, as a user starts them (the embedded Prefect API starts in
each, inside the run folder). Per stage, the rerun's own time is what the runner measured for the
stage (fingerprint, footer checks, the stage's `finish`); `check (no Prefect)` repeats the same check
in this process through `tasks.stage.run_stage`, without Prefect around it. Models and torch run on
one thread (`OMP_NUM_THREADS=1`), the task runner on two threads.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def prepare(work: Path, pairs: int, gallery: int, size: tuple[int, int], shards: int) -> Path:
    import yaml

    from tasks.offline.synth import synthesize_gallery, synthesize_paired
    from tasks.offline.tiny_models import make_tiny_models

    if not (work / "data" / "paired").exists():
        synthesize_paired(work / "data" / "paired", per_type=pairs // 4, seed=0, size=size)
        synthesize_gallery(work / "data" / "gallery", n=gallery, seed=1, size=size)
    if not (work / "models" / "config.yaml").exists():
        make_tiny_models(work / "models", seed=0)
    cfg = yaml.safe_load((work / "models" / "config.yaml").read_text())
    cfg.update(sources=[f"unirain={work / 'data' / 'paired'}"], gallery=[str(work / "data" / "gallery")])
    cfg["ingest"]["num_shards"] = shards
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    return config


FLOW = ("import sys; from flows.prefect_env import configure_offline; configure_offline(sys.argv[2]); "
        "from flows.distill import distill_flow; r = distill_flow(run=sys.argv[2], config=sys.argv[1]); "
        "print(chr(10).join(v['line'] for v in r.values()))")


def distill(config: Path, run: Path, flow: bool = False) -> tuple[float, str]:
    """`unirain distill` (flow=False), or the distill flow itself as a deployment runs it (flow=True)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    started = time.perf_counter()
    args = ["-c", FLOW, str(config), str(run)] if flow else ["-m", "flows.cli", "distill", "--config", str(config),
                                                              "--run", str(run)]
    out = subprocess.run([sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if out.returncode:
        raise SystemExit(f"distill failed:\n{out.stdout}\n{out.stderr}")
    return seconds, out.stdout


def stage_seconds(run: Path) -> dict[str, float]:
    from tasks.pipeline import STAGE_ORDER

    return {name: json.loads((run / "state" / f"{name}.json").read_text())["last"]["seconds"] for name in STAGE_ORDER}


def line_seconds(stdout: str) -> dict[str, float]:
    """Per stage, the seconds its report line gives (for a finished stage: the whole check in the flow)."""
    import re

    out = {}
    for line in stdout.splitlines():
        m = re.match(r"(\w+): skipped .*?\(?([0-9.]+) s\)?$", line.strip())
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def pure_checks(config: Path, run: Path) -> dict[str, tuple[float, int]]:
    """Each stage's check through the runner in this process, without Prefect: (seconds, shards redone)."""
    from data_manifests import RunLayout
    from tasks.config import load_run_config
    from tasks.pipeline import STAGE_ORDER
    from tasks.stage import make_stage, run_stage

    cfg = load_run_config(config)
    layout = RunLayout.at(run)
    out = {}
    for name in STAGE_ORDER:
        started = time.perf_counter()
        report = run_stage(make_stage(name, cfg, layout.num_shards), layout)
        out[name] = (time.perf_counter() - started, report.redone)
    return out


def main() -> None:
    from tasks.offline.synth import parse_size

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--gallery", type=int, default=200)
    ap.add_argument("--size", default="128x128")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--work", help="keep data and models here (default: a temporary folder)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-rerun-")).resolve()
    t = time.perf_counter()
    config = prepare(work, args.pairs, args.gallery, parse_size(args.size), args.shards)
    print(f"data and tiny models: {time.perf_counter() - t:.0f} s in {work}")
    run = work / f"run-{int(time.time())}"
    first, _ = distill(config, run)
    first_stages = stage_seconds(run)
    again, stdout = distill(config, run)
    again_stages = line_seconds(stdout)
    in_flow, flow_stdout = distill(config, run, flow=True)
    flow_stages = line_seconds(flow_stdout)
    pure = pure_checks(config, run)
    print(f"\n{args.pairs} pairs, {args.gallery} gallery images, {args.size}, {args.shards} shards, load {os.getloadavg()}")
    print("\n| stage | first run s | rerun: check s (`unirain distill`) | rerun: check s (distill flow) | "
          "check s (in this process) | shards redone on rerun |")
    print("|---|---|---|---|---|---|")
    for name in first_stages:
        print(f"| {name} | {first_stages[name]:.1f} | {again_stages[name]:.2f} | {flow_stages[name]:.2f} | "
              f"{pure[name][0]:.2f} | {pure[name][1]} |")
    print(f"| **whole process** | **{first:.0f}** | **{again:.1f}** | **{in_flow:.1f}** | | |")
    print(f"\nrerun / first: {again / first:.3f} (`unirain distill`), {in_flow / first:.3f} (the distill flow, "
          "with the embedded Prefect API starting in the process)")
    print("\nrerun's lines:\n" + "\n".join(line for line in stdout.splitlines() if "skipped" in line))


if __name__ == "__main__":
    main()
