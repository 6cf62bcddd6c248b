"""The `unirain` command line: one module per command group under `flows/commands/`.

Command modules must stay cheap to import (no torch/prefect at module level): argparse builds
every sub-parser at start-up, so heavy imports belong inside the handlers.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines `register(subparsers)` and sets `func` on the parsers it adds.
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
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unirain",
        description="UniRain: RAG-based rain data distillation and an asymmetric MoE derainer.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from flows.prefect_env import configure_offline

    args = build_parser().parse_args(argv)
    configure_offline(getattr(args, "run", None))
    from flows.run_guard import command_lock

    try:
        with command_lock(args):  # one writer per run folder
            return int(args.func(args) or 0)
    except UserError as exc:  # a clear message, no traceback
        print(f"unirain {args.command}: error: {exc}", file=sys.stderr)
        return 2


class UserError(Exception):
    """Bad input from the user (config, paths, names): printed without a traceback."""


if __name__ == "__main__":
    # `python -m flows.cli`: run the imported module's main, whose UserError is the one commands raise
    from flows.cli import main as _main

    sys.exit(_main())
