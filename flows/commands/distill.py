"""`unirain distill`: the whole distillation as one Prefect flow."""
from __future__ import annotations

STAGES = ("ingest", "caption", "embed", "retrieve", "vote", "select")


def register(sub) -> None:
    p = sub.add_parser("distill", help="run ingest -> caption -> embed -> retrieve -> vote -> select",
                       description="Distil a run folder with the settings of a run config. Rerunning the same "
                                   "command resumes: finished shards are skipped, cached judge answers reused.")
    p.add_argument("--config", required=True, help="run config YAML (configs/demo.yaml, configs/paper.yaml, ...)")
    p.add_argument("--run", required=True, help="run folder (created if missing)")
    p.add_argument("--until", choices=STAGES, default="select", help="last stage to run (default: select)")
    p.set_defaults(func=run)


def run(args) -> int:
    from tasks.config import ConfigError

    from ..cli import UserError
    from ..config import load_run_config

    try:
        cfg = load_run_config(args.config)
        from tasks.sources import parse_gallery, parse_sources

        parse_sources(cfg.sources)
        parse_gallery(cfg.gallery)
    except (ConfigError, ValueError) as exc:
        raise UserError(str(exc)) from None
    from ..distill import distill_flow

    from data_manifests import RunLayout
    from tasks.funnel import format_table, funnel_table

    distill_flow(run=args.run, config=args.config, until=args.until)
    layout = RunLayout.at(args.run)
    print(f"run {layout.root} (through {args.until})\n" + format_table(funnel_table(layout)))
    print(f"manifests: {layout.root / 'manifests'}   reports: {layout.reports}")
    return 0
