"""`unirain ingest`: list and probe sources and gallery folders into a run's manifests."""
import typer

from ..cli import invoke

DESCRIPTION = ("Write RUN/manifests/{candidates,gallery,rejects} from dataset folders. "
               "Source specs: ADAPTER[.LABEL][:TYPE]=PATH (adapters: see `unirain ingest --list-adapters`). "
               "A new run records its shard count (ingest.num_shards of --config, else 16); "
               "later commands on the run use it.")


def register(app: typer.Typer) -> None:
    @app.command("ingest", help=DESCRIPTION,
                 short_help="list, hash and probe dataset pairs and gallery images into RUN/manifests")
    def ingest(
        run_: str = typer.Option(None, "--run", help="run folder (created if missing)"),
        source: list[str] = typer.Option([], "--source", metavar="NAME=PATH", help="a paired dataset; repeatable"),
        gallery: list[str] = typer.Option([], "--gallery", metavar="PATH",
                                          help="a folder of real rainy photos (recursive); repeatable"),
        config: str = typer.Option(None, help="run config YAML (its ingest: and task_runner: sections apply)"),
        list_adapters: bool = typer.Option(False, "--list-adapters", help="print the dataset adapters and exit"),
    ) -> None:
        invoke("ingest", run, writes_run=True, run=run_, source=list(source), gallery=list(gallery), config=config,
               list_adapters=list_adapters)


def run(args) -> int:
    from tasks.ingest.adapters import ADAPTERS

    from ..cli import UserError

    if args.list_adapters:
        for name, cls in sorted(ADAPTERS.items()):
            print(f"{name:16s} {(cls.__doc__ or '').strip().splitlines()[0]}")
        return 0
    if not args.run:
        raise UserError("--run is required")
    if not args.source and not args.gallery:
        raise UserError("nothing to ingest: give at least one --source NAME=PATH or --gallery PATH")
    from data_manifests import ManifestError
    from tasks.config import ConfigError, RunConfig, load_run_config
    from tasks.ingest.sources import parse_gallery, parse_sources
    from tasks.stage import check_run

    try:
        cfg = load_run_config(args.config) if args.config else RunConfig()
        cfg = cfg.model_copy(update={"sources": args.source, "gallery": args.gallery})
        parse_sources(args.source)
        parse_gallery(args.gallery)
        check_run(args.run, cfg, args.config or "the default config")
    except (ValueError, ConfigError, ManifestError) as exc:
        raise UserError(str(exc)) from None
    import sys

    from tasks.ingest.empty import EXIT_NOTHING_INGESTED, empty_sources, nothing_line

    warnings, found = empty_sources(args.source, args.gallery)  # from the listing: before Prefect starts
    for line in warnings:
        print(line, file=sys.stderr)
    if not found:
        print(f"unirain ingest: error: {nothing_line(args.run)}", file=sys.stderr)
        return EXIT_NOTHING_INGESTED
    from data_manifests import RunLayout
    from tasks.funnel import format_table, funnel_table

    from ..stage import run_stage_flow

    report = run_stage_flow("ingest", args.run, cfg)
    print(report["line"])
    print(format_table(funnel_table(RunLayout.at(args.run))))
    return 0

