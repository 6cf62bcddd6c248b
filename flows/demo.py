"""`make demo`: the whole system offline on synthetic data with tiny random-weight models.

Synthesises paired rain and a stand-in gallery (both SYNTHETIC), builds the tiny models, distils
with configs/demo.yaml, trains `unirain-s` briefly on what survived, evaluates it on a synthetic
test set, and prints the funnel and the evaluation table. Rerunning it resumes and reuses.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "demo.yaml"


def prepare(out: Path, types: tuple[str, ...] | None = None) -> None:
    """Synthetic data of `types` (default the four rain types) and the tiny models."""
    from data_manifests import RAIN_TYPES
    from tasks.offline.synth import synthesize_gallery, synthesize_paired
    from tasks.offline.tiny_models import make_tiny_models

    types = types or RAIN_TYPES
    data = out / "data"
    if not (data / "paired").exists():
        synthesize_paired(data / "paired", per_type=16, seed=0, rain_types=types)
        synthesize_gallery(data / "gallery", n=8 * len(types), seed=1, rain_types=types)
        synthesize_paired(data / "test", per_type=3, seed=2, rain_types=types)
    if not (out / "models" / "config.yaml").exists():
        make_tiny_models(out / "models", seed=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_run", help="demo folder (must be demo_run for configs/demo.yaml)")
    parser.add_argument("--config", default=str(CONFIG),
                        help="run config (default configs/demo.yaml, rain only); configs/allweather.yaml with "
                             "--out allweather_run runs the six all-weather types; its types: say what is synthesised")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    config = Path(args.config).resolve()
    run = out / "run"

    from flows.prefect_env import configure_offline

    configure_offline(run)
    started = time.monotonic()
    print("== 1/4 synthetic data and tiny models (SYNTHETIC rain, RANDOM-WEIGHT models)")
    from unirain_model.data import run_types

    prepare(out, run_types(config))

    import pandas as pd

    from data_manifests import RunLayout
    from flows.distill import distill_flow
    from flows.evaluate import evaluate_flow
    from flows.train import train_flow
    from tasks.funnel import format_table, funnel_table
    from unirain_model.evaluation import format_table as evaluation_table

    print("== 2/4 distillation: ingest -> caption -> embed -> retrieve -> vote -> select")
    distill_flow(run=str(run), config=str(config))
    print(format_table(funnel_table(RunLayout.at(run))))
    print("== 3/4 training unirain-s briefly on the distilled pairs")
    trained = train_flow(run=str(run), config=str(config))
    print(f"checkpoint: {trained['checkpoint']} (iteration {trained['iteration']})")
    print("== 4/4 evaluation on a synthetic test set: the model beside the rainy input itself, per rain type")
    records = evaluate_flow(run=str(run), config=str(config), data=[str(out / "data" / "test")])
    print(evaluation_table(pd.DataFrame(records)))
    print(f"Before/after grids (input | output | target): {run / 'reports' / 'evaluation_grids'}")
    print(f"\nDemo finished in {time.monotonic() - started:.0f} s.")
    print(f"Manifests: {run / 'manifests'} (read with pandas.read_parquet(folder))")
    print(f"Reports:   {run / 'reports'}   Checkpoints: {run / 'checkpoints'}")
    print(f"Funnel again any time: .venv/bin/unirain inspect {run}")
    print("The captions, embeddings and votes come from random-weight models: they exercise the real code, "
          "their values mean nothing.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
