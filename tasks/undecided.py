"""Pairs a run still has to ask about: `undecided` rejects (a judge outage, a transient failure, or a
judge the cascade skipped). A rerun of the vote stage asks them again; until none is left the run is
not complete, and nothing trains on it automatically."""
from __future__ import annotations

from data_manifests import RunLayout, read_manifest

UNDECIDED = "undecided"


def undecided_pairs(run) -> int:
    """How many distinct pairs of `run` are rejected as `undecided` at stage vote or select."""
    layout = run if isinstance(run, RunLayout) else RunLayout.at(run)
    rejects = read_manifest(layout.rejects, "rejects", columns=["item_id", "reason"])
    return int(rejects.loc[rejects["reason"] == UNDECIDED, "item_id"].nunique())


def undecided_notice(run) -> str | None:
    """One line for the CLI when pairs are undecided, else None."""
    n = undecided_pairs(run)
    if not n:
        return None
    return (f"{n} pair{'s' if n != 1 else ''} still undecided (a judge failed or was unreachable): the run is "
            f"incomplete; rerunning `unirain distill` asks the judges again for those pairs only")
