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


def _rebase(value, old: Path, new: Path):
    """`value` (a path string, `NAME=PATH`, `local-dir:PATH`, or lists/mappings of them) with every
    path under `old` moved under `new` (written relative to `new`, the copied config's folder)."""
    if isinstance(value, dict):
        return {k: _rebase(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_rebase(v, old, new) for v in value]
    if not isinstance(value, str):
        return value
    if value.startswith("local-dir:"):
        return "local-dir:" + _rebase(value.removeprefix("local-dir:"), old, new)
    if "=" in value:  # a source spec
        name, path = value.split("=", 1)
        return f"{name}={_rebase(path, old, new)}"
    path = Path(value)
    if path.is_absolute() and path.is_relative_to(old):
        return f"./{path.relative_to(old)}"  # ./: a path, not a hub id like org/name
    return value


def demo_config(config: Path, out: Path) -> Path:
    """The run config for a demo under `out`: `config` itself when its data and models already lie
    there, else `out/config.yaml`: `config` with its sources, gallery and models moved to `out/data`
    and `out/models` (the demo configs name `../demo_run/...`), its other paths absolute."""
    import yaml

    from tasks.config import load_config_data

    data = load_config_data(config)
    sources = [str(s).split("=", 1)[-1] for s in data.get("sources") or []]
    if not sources:
        return config
    old = Path(sources[0]).parents[1]  # <root>/data/paired: the folder the config's demo lives in
    if old == out:
        return config
    # The whole config, its paths resolved, not `extends:` (the trainer's loader reads train: alone).
    copy = {**data, **{key: _rebase(data[key], old, out) for key in ("sources", "gallery", "models") if key in data}}
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.yaml"
    path.write_text(f"# written by flows.demo: {config} with its data and models under this folder\n"
                    + yaml.safe_dump(copy, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_run",
                        help="demo folder: data, models and the run go here (another folder gets OUT/config.yaml, "
                             "the config with its paths moved there)")
    parser.add_argument("--config", default=str(CONFIG),
                        help="run config (default configs/demo.yaml, rain only); configs/allweather.yaml with "
                             "--out allweather_run runs the six all-weather types; its types: say what is synthesised")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    config = Path(args.config).resolve()
    run = out / "run"

    from flows.prefect_env import configure_offline

    configure_offline(run)
    try:
        return _demo(out, config, run)
    except KeyboardInterrupt:  # one line, no traceback: what finished and how to go on
        import shlex
        import sys

        from flows.interrupt import finished_work

        done = finished_work(run)
        again = "python -m flows.demo " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
        also = " (or `make demo`)" if out == REPO / "demo_run" else ""
        print(f"demo: interrupted{f' ({done})' if done else ''}; rerun `{again.strip()}`{also} to resume",
              file=sys.stderr, flush=True)
        return 130


def _demo(out: Path, config: Path, run: Path) -> int:
    started = time.monotonic()
    print("== 1/4 synthetic data and tiny models (SYNTHETIC rain, RANDOM-WEIGHT models)")
    from unirain_model.data import run_types

    prepare(out, run_types(config))
    config = demo_config(config, out)

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
    from flows.report import write_report

    report = write_report(run)
    print(f"\nDemo finished in {time.monotonic() - started:.0f} s.")
    print(f"Manifests: {run / 'manifests'} (read with pandas.read_parquet(folder))")
    print(f"Reports:   {run / 'reports'}   Checkpoints: {run / 'checkpoints'}")
    print(f"Funnel again any time: .venv/bin/unirain inspect {run}")
    print("The captions, embeddings and votes come from random-weight models: they exercise the real code, "
          "their values mean nothing.")
    print(f"Report (one HTML file, opens offline; `unirain report {run}` rewrites it): {report}")
    return 0


if __name__ == "__main__":
    status = main()
    if status == 130:
        from flows.interrupt import exit_now

        exit_now(status)
    raise SystemExit(status)
