"""One writer per run folder: an exclusive `flock` on `RUN/.lock` for the duration of a command.

Two commands writing one run (two `distill`s captioning the same shards, a `select` during a
`vote`) corrupt each other's work, so every command that writes to a run holds this lock. The lock
is the kernel's `flock`, released when its holder exits however it exits (kill -9 included), so a
stale lock of a dead process is simply taken over; the pid and command written into the file only
say who holds it. The file is removed on release and a new holder checks that the file it locked is
still the one at the path (else retries), so removing it never lets two holders in.

A command refused for bad arguments leaves nothing behind: the file goes, and so does a run folder
the lock itself had to create while it is still empty.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from pathlib import Path
from typing import Iterator

from .errors import ManifestError

LOCK_NAME = ".lock"


class RunLockError(ManifestError):
    """The run folder cannot be locked (not a folder, not writable)."""


class RunBusy(RunLockError):
    """Another live process holds the run's lock."""


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info.get('pid', '?')} (command {info.get('command', '?')})"
    except (OSError, ValueError):
        return "another process"


def _missing_parents(path: Path) -> list[Path]:
    """`path` and its missing ancestors, deepest first: what creating it would add."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


@contextlib.contextmanager
def run_lock(run: str | os.PathLike, command: str | None = None) -> Iterator[Path]:
    """Hold `RUN/.lock` exclusively, or raise `RunBusy` naming the holder at once (no waiting).

    Under torchrun every rank runs the same command on the same run: rank 0 holds the lock for all.
    """
    if int(os.environ.get("RANK", "0") or 0) > 0:
        yield Path(run)
        return
    root = Path(run).resolve()
    created = _missing_parents(root)
    path = root / LOCK_NAME
    command = command or " ".join(["unirain", *sys.argv[1:]])[:300]
    while True:
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            _remove_empty(created)
            raise RunLockError(f"cannot use {root} as a run folder: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            _remove_empty(created)
            raise RunBusy(f"run {root} in use by {holder}; wait for it to finish or stop it") from None
        try:  # the file may have been removed (released) between open and flock: lock the current one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": command}).encode(), 0)
        yield root
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)
        _remove_empty(created)


def _remove_empty(created: list[Path]) -> None:
    """Remove the folders the lock made while nothing was written in them (empty folders only, such
    as the `.prefect/` Prefect makes when imported), the run folder first, then its new parents."""
    if not created or not created[0].is_dir():
        return
    if any(not p.is_dir() or p.is_symlink() for p in created[0].rglob("*")):
        return  # the command wrote something: the run stays
    for folder in sorted((p for p in created[0].rglob("*")), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            return
