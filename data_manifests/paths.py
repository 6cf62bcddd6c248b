"""Paths built from data stay inside their folder.

Manifest values (`source`, `rain_type`, file stems), config and variant names and artifact keys
end up in file names. Each such value is one path *component*: `safe_component` turns it into a
name with no separator and no `.`/`..` meaning, and `confined_join` joins components under a root
and then checks that the resolved result is still inside the resolved root (a symlink planted in
the folder cannot lead out either). A violation is a `PathEscapeError` (a `ValueError`), which
callers treat as a bad item or a clear error, never a write elsewhere.
"""
from __future__ import annotations

import os
from pathlib import Path

_KEEP = "-_.+=@,"  # besides letters and digits (any script): harmless in every file system we target
MAX_COMPONENT = 200  # bytes of UTF-8: below the usual 255 limit, leaving room for suffixes


class PathEscapeError(ValueError):
    """A path built from data would leave the folder it belongs in."""


def safe_component(name: object) -> str:
    """One file-name component from any value: separators, control and other special characters
    become `_`, a leading dot becomes `_` (no `.`, `..` or hidden names), never empty."""
    text = "".join(c if c.isalnum() or c in _KEEP else "_" for c in str(name))
    if text.startswith("."):
        text = "_" + text[1:]
    text = text or "_"
    while len(text.encode("utf-8")) > MAX_COMPONENT:
        text = text[:-1]
    return text


def check_inside(root: str | os.PathLike, path: str | os.PathLike, what: str = "path") -> Path:
    """`path` if, resolved (links followed as far as they exist), it lies inside resolved `root`."""
    base = Path(root).resolve()
    resolved = Path(path).resolve()
    if resolved != base and base not in resolved.parents:
        raise PathEscapeError(f"{what} {os.fspath(path)!r} leads outside {base} (to {resolved}); refused")
    return Path(path)


def confined_join(root: str | os.PathLike, *parts: object, what: str = "path") -> Path:
    """`root / safe_component(p) / ...`, checked to resolve inside `root`.

    A part may not carry its own folders: every part becomes one sanitised component.
    """
    path = Path(root).joinpath(*(safe_component(p) for p in parts))
    return check_inside(root, path, what)
