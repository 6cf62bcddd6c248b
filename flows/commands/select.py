"""`unirain select`: re-cut a voted run at another threshold, without any model call."""
import typer

from ..cli import invoke


def register(app: typer.Typer) -> None:
    @app.command(
        "select", short_help="cut a voted run into distilled + rejects (no model call)",
        help="Join candidates, retrieval and votes of RUN into manifests/distilled and select rejects, "
             "and write RUN/reports/ (funnel, votes.md, histograms). Reads stored scores only: no judge "
             "is loaded. Pairs whose verdict at the new threshold needs a judge the cascade skipped are "
             "reported and left undecided; rerun the vote stage at that threshold to ask them.")
    def select(
        run_: str = typer.Option(..., "--run", help="run folder (voted)"),
        config: str = typer.Option(None, help="run config YAML (its vote.threshold and select: apply)"),
        threshold: float = typer.Option(None, metavar="X", help="vote = p_real >= X (default: the config's "
                                                                "vote.threshold, else the vote stage's)"),
    ) -> None:
        invoke("select", run, writes_run=True, run=run_, config=config, threshold=threshold)


def run(args) -> int:
    from pathlib import Path

    from ..cli import UserError

    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise UserError(f"--threshold must be within [0, 1], not {args.threshold:g}")
    if not (Path(args.run) / "manifests" / "votes").is_dir():
        raise UserError(f"{args.run}: no votes manifest; run `unirain distill --until vote` first")
    from data_manifests import ManifestError, RunLayout
    from tasks.config import ConfigError, RunConfig, load_run_config
    from tasks.stage import check_run

    try:
        cfg = load_run_config(args.config) if args.config else RunConfig()
        check_run(args.run, cfg, args.config or "the default config")
    except (ConfigError, ManifestError) as exc:
        raise UserError(str(exc)) from None
    from ..stage import run_stage_flow

    threshold = args.threshold
    if threshold is None and not args.config:  # the threshold the vote stage ran with
        from tasks.stage import read_state

        threshold = ((read_state(RunLayout.at(args.run), "vote") or {}).get("payload", {})
                     .get("config", {}).get("vote.threshold"))
    try:
        counts = run_stage_flow("select", args.run, cfg, threshold=threshold)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    layout = RunLayout.at(args.run)
    print(counts["line"])
    print((layout.reports / "funnel.md").read_text())
    print(f"distilled: {counts['distilled']} pairs at threshold {counts['threshold']:g} -> {layout.manifest('distilled')}")
    if counts.get("needs_skipped_judge"):
        print(f"{counts['needs_skipped_judge']} pairs need a judge the cascade skipped: rerun the vote stage "
              f"with vote.threshold: {counts['threshold']:g}")
    print(f"reports: {layout.reports}")
    from tasks.undecided import undecided_notice

    notice = undecided_notice(layout)
    if notice:
        print(notice)
    return 0
