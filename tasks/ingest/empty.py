"""Sources that hold nothing: a source (or gallery folder) whose listing finds no file gets one warning
naming the layout its adapter expected, and a run whose sources all find nothing is an error. Checked
from the listing alone (no image is read), so `ingest` and `distill` refuse it before any stage starts."""
from __future__ import annotations

from tasks.ingest.adapters import get_adapter
from tasks.ingest.sources import parse_gallery, parse_sources

EXIT_NOTHING_INGESTED = 1  # the input holds nothing to work on (2 stays "bad arguments or config")


def expected_layout(adapter: str) -> str:
    """The layout an adapter reads: its docstring's first paragraph (as `--list-adapters` shows it)."""
    doc = (type(get_adapter(adapter)).__doc__ or "").strip().split("\n\n")[0]
    return " ".join(doc.split()) or adapter


def empty_sources(sources: list[str], gallery: list[str]) -> tuple[list[str], int]:
    """(one warning per source or gallery folder listing no file, how many files all of them list)."""
    from tasks.ingest.stage import list_gallery, list_source

    lines, total = [], 0
    for spec in parse_sources(sources):
        n = len(list_source(spec))
        total += n
        if not n:
            lines.append(f"warning: source {spec.name} ({spec.path}) has no images; the {spec.adapter} adapter "
                         f"expects {expected_layout(spec.adapter)}")
    for folder in parse_gallery(gallery):
        n = len(list_gallery(folder))
        total += n
        if not n:
            lines.append(f"warning: gallery {folder.name} ({folder}) has no images; expected rainy photos "
                         f"in it or its sub-folders")
    return lines, total


def nothing_line(run) -> str:
    return f"{run}: nothing to ingest: every source and gallery folder is empty (see the warnings above)"
