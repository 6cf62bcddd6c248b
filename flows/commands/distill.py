"""`unirain distill`: the whole distillation as one Prefect flow."""
import typer

from tasks.pipeline import STAGE_ORDER

from ..cli import choices, invoke

Stage = choices("Stage", STAGE_ORDER)


def register(app: typer.Typer) -> None:
    @app.command("distill", short_help="run " + " -> ".join(STAGE_ORDER),
                 help="Distil a run folder with the settings of a run config. Rerunning the same command resumes: "
                      "finished shards are skipped, stale or damaged ones redone, cached judge answers reused.")
    def distill(
        config: str = typer.Option(..., help="run config YAML (configs/demo.yaml, configs/paper.yaml, ...)"),
        run_: str = typer.Option(..., "--run", help="run folder (created if missing)"),
        until: Stage = typer.Option(STAGE_ORDER[-1], help="last stage to run"),
    ) -> None:
        invoke("distill", run, writes_run=True, config=config, run=run_, until=until.value)


def run(args) -> int:
    from data_manifests import ManifestError
    from data_manifests.registry import RegistryError
    from tasks.config import ConfigError, load_run_config
    from tasks.model_ids import ModelLoadError
    from tasks.pipeline import stages_until
    from tasks.ingest.sources import parse_gallery, parse_sources
    from tasks.stage import check_finished, check_run, preflight

    from ..cli import UserError

    try:  # everything a user can get wrong fails here, before Prefect starts or any stage runs
        cfg = load_run_config(args.config)
        parse_sources(cfg.sources)
        parse_gallery(cfg.gallery)
        num_shards = check_run(args.run, cfg, args.config)
        if not (cfg.sources or cfg.gallery):  # nothing to ingest: the run must hold candidates already
            from data_manifests import RunLayout
            from tasks.stage import read_state

            if not RunLayout.at(args.run).is_run() or not read_state(RunLayout.at(args.run), "ingest"):
                raise ConfigError(f"{args.config}: sources: none listed and {args.run} has no candidates: add "
                                  "`sources:` and `gallery:` to the config or run `unirain ingest` first")
        preflight(cfg, num_shards, [s for s in stages_until(args.until) if s != "ingest"])
    except (ConfigError, ManifestError, ValueError, RegistryError, ModelLoadError) as exc:
        raise UserError(str(exc)) from None
    from data_manifests import RunLayout
    from tasks.funnel import format_table, funnel_table

    stages = [s for s in stages_until(args.until) if s != "ingest" or cfg.sources or cfg.gallery]
    if "ingest" in stages:  # an empty source is warned about, an all-empty run refused, before any stage
        import sys

        from tasks.ingest.empty import EXIT_NOTHING_INGESTED, empty_sources, nothing_line

        warnings, found = empty_sources(cfg.sources, cfg.gallery)
        for line in warnings:
            print(line, file=sys.stderr)
        if not found:
            print(f"unirain distill: error: {nothing_line(args.run)}", file=sys.stderr)
            return EXIT_NOTHING_INGESTED
    finished = check_finished(cfg, args.run, stages)
    if finished is not None:  # nothing to redo: no Prefect flow run, only the checks
        lines = [report.line() for report in finished]
    else:
        from ..distill import distill_flow

        results = distill_flow(run=args.run, config=args.config, until=args.until)
        lines = [report["line"] for report in results.values()]
    layout = RunLayout.at(args.run)
    for line in lines:  # one line per stage: skipped, redone and why
        print(line)
    print(f"run {layout.root} (through {args.until})\n" + format_table(funnel_table(layout)))
    print(f"manifests: {layout.root / 'manifests'}   reports: {layout.reports}")
    from tasks.undecided import undecided_notice

    notice = undecided_notice(layout)  # a judge outage leaves pairs open: say so, a rerun asks again
    if notice:
        print(notice)
    return 0
