"""`unirain relocate`: point a run's sources at their new roots after the run or its data moved."""
import typer

from ..cli import invoke, run_folder


def register(app: typer.Typer) -> None:
    @app.command(
        "relocate", short_help="update the folders a run's sources live in (a moved run or moved data)",
        help="Manifests store image paths relative to their source's root; RUN/run.json maps each source to its "
             "root. After moving the data (or the run to another machine), give each moved source its new root. "
             "Without --root: list the roots.")
    def relocate(
        run_arg: str = typer.Argument(None, metavar="RUN", help="run folder (or give --run)"),
        run_: str = typer.Option(None, "--run", help="run folder (the same as the RUN argument)"),
        root: list[str] = typer.Option([], "--root", metavar="NAME=PATH", help="a source's new root; repeatable"),
    ) -> None:
        invoke("relocate", run, writes_run=True, run=run_folder(run_arg, run_, "relocate"), root=list(root))


def run(args) -> int:
    from pathlib import Path

    from data_manifests import ManifestError, RunLayout

    from ..cli import UserError

    layout = RunLayout.at(args.run)
    if not layout.is_run():
        raise UserError(f"{layout.root} is not a UniRain run folder (no run.json)")
    try:
        roots = {}
        for spec in args.root:
            name, sep, path = spec.partition("=")
            if not sep or not name or not path:
                raise UserError(f"bad --root {spec!r}: expected NAME=PATH")
            roots[name] = Path(path).expanduser()
        moved = layout.relocate(roots) if roots else {}
        current = layout.roots()
    except ManifestError as exc:
        raise UserError(str(exc)) from None
    for name, (old, new) in moved.items():
        print(f"{name}: {old} -> {new}")
    for name, root in sorted(current.items()):
        print(f"{name:24s} {root}{'' if Path(root).is_dir() else '   (missing)'}")
    return 0
