"""`unirain report RUN`: one self-contained HTML file for a run (funnel, charts, gallery, evaluation)."""
import typer

from ..cli import invoke, run_folder


def register(app: typer.Typer) -> None:
    @app.command(
        "report", short_help="write one self-contained HTML report of a run (no network, images inline)",
        help="Write one HTML file with the run's funnel, every chart, the decision gallery, the judge agreement "
             "and the evaluation beside its input baseline. Images are inline: the file opens offline and can be "
             "mailed as is. Reads the run folder only.")
    def report(
        run_arg: str = typer.Argument(None, metavar="RUN", help="run folder (or give --run)"),
        run_: str = typer.Option(None, "--run", help="run folder (the same as the RUN argument)"),
        out: str = typer.Option(None, metavar="FILE", help="HTML file to write (default: RUN/reports/report.html)"),
    ) -> None:
        invoke("report", run, run=run_folder(run_arg, run_, "report"), out=out)


def run(args) -> int:
    from data_manifests import RunLayout

    from ..cli import UserError

    layout = RunLayout.at(args.run)
    if not layout.is_run():
        raise UserError(f"{layout.root} is not a UniRain run folder (no run.json)")
    from ..report import write_report

    try:
        path = write_report(layout.root, args.out)
    except (FileNotFoundError, ValueError) as exc:  # RunError, ManifestError are ValueErrors
        raise UserError(str(exc)) from None
    print(f"report: {path}")
    return 0
