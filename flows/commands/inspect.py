"""`unirain inspect RUN`: the funnel of a run, per source and per stage."""
import typer

from ..cli import invoke, run_folder


def register(app: typer.Typer) -> None:
    @app.command("inspect", short_help="print a run's funnel (kept and rejected by reason, per source and stage)",
                 help="Print a run's funnel (kept and rejected by reason, per source and stage) and which stages "
                      "are done, stale or not run. Reads the manifests only: no model, no Prefect.")
    def inspect(
        run_arg: str = typer.Argument(None, metavar="RUN", help="run folder (or give --run)"),
        run_: str = typer.Option(None, "--run", help="run folder (the same as the RUN argument)"),
        json_: bool = typer.Option(False, "--json", help="print the funnel as JSON records"),
    ) -> None:
        invoke("inspect", run, run=run_folder(run_arg, run_, "inspect"), json=json_)


def run(args) -> int:
    from data_manifests import RunLayout

    from ..cli import UserError

    layout = RunLayout.at(args.run)
    if not layout.is_run():
        raise UserError(f"{layout.root} is not a UniRain run folder (no run.json)")
    from tasks.funnel import format_table, funnel_table

    import pandas as pd

    from tasks.stage import stage_status

    damaged: list = []  # a truncated or corrupt shard is named and left out; the rest is still shown
    frame = funnel_table(layout, damaged)
    stages = pd.DataFrame(stage_status(layout))
    import sys

    for path, why in dict(damaged).items():
        print(f"warning: damaged manifest shard {path} left out of the counts ({why}); "
              f"`unirain distill` redoes it", file=sys.stderr)
    if args.json:
        print(frame.to_json(orient="records"))
    elif sys.stdout.isatty():  # a person at a terminal: rich tables
        print_tables(f"run: {layout.root}", frame, stages.fillna(""))
    else:  # a pipe or a file: the markdown tables, stable for scripts
        print(f"run: {layout.root}\n")
        print(format_table(frame))
        print("\n" + format_table(stages.fillna("")))  # done, stale (an earlier stage was redone), not run
    return 0


def print_tables(title: str, *frames) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(title, highlight=False)
    for frame in frames:
        table = Table(show_lines=False, header_style="bold")
        for column in frame.columns:
            numeric = frame[column].dtype.kind in "iuf"
            table.add_column(str(column), justify="right" if numeric else "left")
        for row in frame.itertuples(index=False):
            table.add_row(*(str(v) for v in row))
        console.print(table)
