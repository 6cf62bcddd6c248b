"""Which run folder a command writes to, and holding that run's lock while the command runs.

A command says it writes to a run with `invoke(..., writes_run=True)` (the run is `args.run`) or
`writes_run=<function of args>`; `flows.cli.invoke` holds the lock around the command.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


def run_of_report(args) -> Path | None:
    """`evaluate`: the run folder its reports go into (the checkpoint's run, or the run `--out` lies
    in), or None when it writes outside any run."""
    start = Path(args.out or args.checkpoint).resolve()
    for folder in [start, *start.parents][:5]:  # RUN/reports/evaluation, RUN/checkpoints/x.safetensors
        if (folder / "run.json").is_file():
            return folder
    return None


def written_run(args) -> str | os.PathLike | None:
    spec = getattr(args, "writes_run", None)
    if callable(spec):
        return spec(args)
    return getattr(args, "run", None) if spec else None


@contextlib.contextmanager
def command_lock(args) -> Iterator[None]:
    """Hold the lock of the run this command writes to; a busy run is a UserError (exit 2)."""
    run = written_run(args)
    if not run:
        yield
        return
    from data_manifests.run_lock import RunLockError, run_lock

    from .cli import UserError

    try:
        lock = run_lock(run, f"unirain {args.command}")
        lock.__enter__()
    except RunLockError as exc:  # busy, or not a usable folder
        raise UserError(str(exc)) from None
    with contextlib.ExitStack() as stack:
        stack.push(lock)
        yield
