"""The `unirain` command line (typer): one module per command group under `flows/commands/`.

Each module defines `register(app)`, adding its typer commands; a command's function only maps its
options onto an `argparse.Namespace` and calls `invoke`, which runs the module's handler
(`handler(args) -> exit status`) under the run's lock. Command modules must stay cheap to import
(no torch/prefect at module level): every module is imported to build the app, even for `--help`.

Exit statuses: 0 ok, 1 the run failed, 2 a usage or config error (one line, no traceback),
130 interrupted (Ctrl-C: one line saying what finished and how to resume).
"""
from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from typing import Callable

import typer

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

COMMAND_MODULES = [
    "flows.commands.synth",
    "flows.commands.ingest",
    "flows.commands.inspect",
    "flows.commands.distill",
    "flows.commands.models",
    "flows.commands.serve_judge",
    "flows.commands.select",
    "flows.commands.relocate",
    "flows.commands.train",
    "flows.commands.model_info",
    "flows.commands.ablate",
    "flows.commands.report",
]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


def choices(name: str, values) -> type:
    """An Enum typer shows and checks as a fixed set of choices (the handler gets `.value`)."""
    import enum

    return enum.Enum(name, {v: v for v in values}, type=str)


def run_folder(argument: str | None, option: str | None, command: str) -> str:
    """The run of a command taking it as `RUN` or as `--run RUN` (one of them, or both the same)."""
    if argument and option and argument != option:
        raise typer.BadParameter(f"RUN {argument!r} and --run {option!r} differ: give one", param_hint="RUN")
    if not (argument or option):
        raise typer.BadParameter(f"give the run folder: `unirain {command} RUN`", param_hint="RUN")
    return argument or option


class UserError(Exception):
    """Bad input from the user (config, paths, names): printed without a traceback, exit 2."""


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"unirain {version('unirain')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            typer.echo("unirain (not installed)")
        raise typer.Exit()


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="unirain", no_args_is_help=True, context_settings=CONTEXT, rich_markup_mode="rich",
        pretty_exceptions_enable=False,
        help="UniRain: RAG-based rain data distillation and an asymmetric MoE derainer.\n\n"
             "Exit status: 0 ok, 1 run failure, 2 usage or config error, 130 interrupted (rerun to resume).")

    @app.callback()
    def _root(version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                           help="print the version and exit")) -> None:
        pass

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    return app


# ---- running a command --------------------------------------------------------------------------

_capture: list | None = None  # parse_args() collects the namespace here instead of running it
_argv: list[str] = []


def invoke(command: str, handler: Callable[[argparse.Namespace], int | None], writes_run=False, **options) -> None:
    """Run `handler` on the options as a namespace, holding the lock of the run it writes to.
    `writes_run`: True (the run is `options['run']`), a function of the namespace, or False."""
    args = argparse.Namespace(command=command, func=handler, writes_run=writes_run, **options)
    if _capture is not None:
        _capture.append(args)
        return
    from flows.prefect_env import configure_offline

    configure_offline(getattr(args, "run", None))
    from flows.run_guard import command_lock

    try:
        with command_lock(args):  # one writer per run folder
            code = int(handler(args) or 0)
    except UserError as exc:  # a clear message, no traceback
        error(f"unirain {command}: error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        from flows.interrupt import interrupted_line

        print(interrupted_line(args, _argv), file=sys.stderr, flush=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if code:
        raise typer.Exit(code)


def error(message: str) -> None:
    """One error line on stderr (rich: red on a terminal, plain text in a pipe)."""
    from rich.console import Console
    from rich.text import Text

    Console(stderr=True, highlight=False, soft_wrap=True).print(Text(message, style="red"))


def main(argv: list[str] | None = None) -> int:
    """The console script and `python -m flows.cli`: the command's exit status (see the module doc)."""
    global _argv
    _argv = list(sys.argv[1:] if argv is None else argv)
    code = _run(_argv)
    if code == EXIT_INTERRUPTED and argv is None:  # a real process (not a test calling main): exit now
        from flows.interrupt import exit_now

        exit_now(code)
    return code


def _run(argv: list[str]) -> int:
    command = typer.main.get_command(build_app())
    try:  # typer's standalone mode prints usage errors ("did you mean ...?") with rich, then exits
        command.main(args=argv, prog_name="unirain", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_FAILED)
    except KeyboardInterrupt:  # before a command started (e.g. while importing)
        print("unirain: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The namespace a command line gives its handler, without running it (for tests)."""
    global _capture
    _capture = []
    try:
        code = typer.main.get_command(build_app()).main(args=list(argv), prog_name="unirain", standalone_mode=False)
        if not _capture:
            raise ValueError(f"{argv}: no command ran (exit {code})")
        return _capture[0]
    finally:
        _capture = None


def app_command():
    """The click command behind the app (for tests that look at parameters)."""
    return typer.main.get_command(build_app())


def quoted(argv: list[str]) -> str:
    return "unirain " + " ".join(shlex.quote(a) for a in argv)


if __name__ == "__main__":
    # `python -m flows.cli`: run the imported module's main, whose UserError is the one commands raise
    from flows.cli import main as _main

    sys.exit(_main())
